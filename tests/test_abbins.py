"""Quantised ab space of the KL loss (``bench.data.abbins``) and the KL loss itself, against brute-force references.

Bin count: the cells of the step-10 ab grid whose centre is the nearest grid point to at least one 8-bit sRGB
colour. An independent brute force with skimage (float64) over the colours that can reach the edge of the ab gamut
(the six faces of the 8-bit RGB cube, 393 k colours) plus a 64-level cube for the interior finds the same 261 cells
as ours; so does the full 8-bit cube (16.8 M colours, 13 s with skimage, run once offline, too slow for CI). A finer
than 8-bit sampling (a 128-level cube) adds exactly one cell, (20, -80): it is reached only by colours such as
(0, 0.4646, 1) whose b = -75.07 lies 0.07 past the cell's edge, and by no 8-bit colour, so no photo can contain it.

Zhang et al. (2016) report 313 bins: they kept every cell that is in gamut for some L, by a denser test of the Lab
gamut boundary (their ``pts_in_hull.npy``), which admits cells that no sRGB colour rounds to. Ours is the stricter
set: 261 cells, every one of them the nearest bin of real colours.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from skimage.color import rgb2lab

from bench.data.abbins import ANNEAL_T, ABBins, gamut_bins
from bench.data.colour import split_lab
import losses


@pytest.fixture(scope="module")
def bins() -> ABBins:
    return ABBins()


@pytest.fixture(scope="module")
def brute_cells() -> set[tuple[int, int]]:
    """Grid cells (a/10, b/10, rounded) hit by the 8-bit colours on the faces of the RGB cube and by a 64-level cube,
    via skimage in float64."""
    v8 = np.arange(256) / 255.0
    u, w = np.meshgrid(v8, v8, indexing="ij")
    faces = []
    for axis in range(3):  # the six faces: one channel at 0 or 1, the other two over all 8-bit levels
        others = [i for i in range(3) if i != axis]
        for c in (0.0, 1.0):
            face = np.empty((256, 256, 3))
            face[..., axis], face[..., others[0]], face[..., others[1]] = c, u, w
            faces.append(face)
    v = np.linspace(0, 1, 64)
    cube = np.stack(np.meshgrid(v, v, v, indexing="ij"), -1).reshape(-1, 1, 3)
    cells = set()
    for rgb in faces + [cube]:
        ab = rgb2lab(rgb)[..., 1:].reshape(-1, 2)
        cells |= set(map(tuple, np.unique(np.round(ab / 10).astype(int), axis=0).tolist()))
    return cells


@pytest.fixture(scope="module")
def real_ab(real_batch) -> torch.Tensor:
    return split_lab(real_batch.float() / 255.0)[1]


def brute_nearest(ab: torch.Tensor, centres: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(squared distances, indices) of the k nearest centres of every pixel, by a full cdist in float64."""
    flat = ab.permute(0, 2, 3, 1).reshape(-1, 2).double()
    d = torch.cdist(flat, centres.double()) ** 2
    return torch.topk(d, k, dim=1, largest=False)


def brute_encode(ab: torch.Tensor, centres: torch.Tensor, k: int = 5, sigma: float = 5.0) -> torch.Tensor:
    B, _, H, W = ab.shape
    d2, idx = brute_nearest(ab, centres, k)
    w = torch.exp(-d2 / (2 * sigma**2))
    w = w / w.sum(1, keepdim=True)
    dense = torch.zeros(len(d2), len(centres), dtype=torch.float64).scatter_(1, idx, w)
    return dense.reshape(B, H, W, -1).permute(0, 3, 1, 2).float()


def test_bin_count_matches_a_brute_force_over_the_srgb_cube(bins, brute_cells):
    ours = {tuple(int(x) for x in c) for c in torch.round(bins.centres / 10).to(torch.int64).tolist()}
    assert bins.n_bins == 261 == len(brute_cells)
    assert ours == brute_cells
    assert len(torch.unique(bins.centres, dim=0)) == bins.n_bins
    assert torch.equal(gamut_bins(), bins.centres)


def test_every_bin_is_hit_by_an_srgb_colour(bins):
    """In-gamut property, bin by bin: some colour of a 64-level sRGB cube (skimage's Lab) lies in the bin's cell
    (|Δa|, |Δb| ≤ 5) and has this bin as its nearest centre."""
    v = np.linspace(0, 1, 64)
    cube = np.stack(np.meshgrid(v, v, v, indexing="ij"), -1).reshape(-1, 1, 3)
    ab = torch.from_numpy(rgb2lab(cube)[:, 0, 1:]).float()
    hit = torch.zeros(bins.n_bins, dtype=torch.bool)
    for chunk in ab.split(32768):
        nearest = torch.cdist(chunk, bins.centres).argmin(1)
        inside = (chunk - bins.centres[nearest]).abs().max(1).values <= 5.0 + 1e-4
        hit[nearest[inside]] = True
    assert hit.all(), f"bins never hit by an sRGB colour: {bins.centres[~hit].tolist()}"


def test_soft_encoding_matches_brute_force_and_sums_to_one(bins, real_ab):
    rng = torch.Generator().manual_seed(0)
    rand_ab = (torch.rand(2, 2, 16, 16, generator=rng) * 2 - 1) * 120  # continuous values: no distance ties
    for ab in (real_ab[:4], rand_ab):
        enc = bins.encode(ab)
        assert enc.shape == (ab.shape[0], bins.n_bins, *ab.shape[2:])
        torch.testing.assert_close(enc.sum(1), torch.ones_like(enc[:, 0]), atol=1e-5, rtol=0)
        assert ((enc > 0).sum(1) == 5).all()
        torch.testing.assert_close(enc, brute_encode(ab, bins.centres), atol=1e-5, rtol=0)
        want = brute_nearest(ab, bins.centres, 1)[1][:, 0].reshape(ab.shape[0], *ab.shape[2:])
        assert torch.equal(bins.hard_index(ab), want)


@pytest.mark.parametrize("sigma, k", [(2.0, 1), (10.0, 8)])
def test_soft_encoding_parameters(sigma, k, real_ab):
    b = ABBins(sigma=sigma, neighbours=k)
    ab = real_ab[:2, :, :16, :16]
    torch.testing.assert_close(b.encode(ab), brute_encode(ab, b.centres, k, sigma), atol=1e-5, rtol=0)
    with pytest.raises(ValueError):
        ABBins(sigma=0)


def _interior(bins: ABBins, ab: torch.Tensor) -> torch.Tensor:
    """Per pixel: are the grid cell of the colour and its 8 neighbours all bins (not at the edge of the gamut)?"""
    flat = ab.permute(0, 2, 3, 1).reshape(-1, 2)
    c0 = bins.centres[0]
    cell = torch.round((flat - c0) / bins.step) * bins.step + c0
    inside = torch.ones(len(flat), dtype=torch.bool)
    for dx in (-1, 0, 1):
        for dy in (-1, 0, 1):
            q = cell + torch.tensor([dx, dy], dtype=flat.dtype) * bins.step
            inside &= torch.cdist(q, bins.centres).min(1).values < 1e-3
    return inside.view(ab.shape[0], *ab.shape[2:])


def test_decode_of_encode_recovers_ab(bins, real_ab):
    """Annealed mean of the soft encoding: the plain mean (T = 1) is within 1 ab unit of real colours whose
    neighbouring cells are all bins; at the edge of the gamut (saturated colours, e.g. kodim23's parrots) the missing
    outer bins pull it inward, by less than half a bin. Zhang's T = 0.38 sharpens towards the nearest bin, so within
    4 units (a bin is 10 wide)."""
    logits = torch.log(bins.encode(real_ab).clamp_min(1e-30))
    err1 = (bins.decode(logits, 1.0) - real_ab).norm(dim=1)
    err_t = (bins.decode(logits, ANNEAL_T) - real_ab).norm(dim=1)
    inside = _interior(bins, real_ab)
    assert inside.float().mean() > 0.95
    assert err1[inside].max() < 1.0 and err1.mean() < 0.4
    assert err1.max() < bins.step / 2
    assert err_t.max() < 4.0 and err_t.mean() < 2.5
    # and the limit T → 0 is the mode, the most probable bin's centre (where it is unique: no equidistant bins)
    mode = bins.decode(logits, 1e-3)
    top2 = logits.topk(2, dim=1).values
    unique = (top2[:, 0] - top2[:, 1]) > 0.05
    want = bins.centres[logits.argmax(1)].permute(0, 3, 1, 2)
    assert unique.float().mean() > 0.9
    torch.testing.assert_close(mode.permute(0, 2, 3, 1)[unique], want.permute(0, 2, 3, 1)[unique], atol=1e-3, rtol=0)


def test_rebalancing_weights_have_expectation_one_under_the_prior(bins, real_ab):
    prior = bins.empirical_prior([real_ab])
    # the empirical prior is the normalised histogram of nearest bins (brute force)
    nearest = brute_nearest(real_ab, bins.centres, 1)[1][:, 0]
    torch.testing.assert_close(prior, torch.bincount(nearest, minlength=bins.n_bins).float() / len(nearest))
    for lam in (0.0, 0.5, 1.0):
        p = prior.double() + (1e-6 if lam == 0 else 0)  # λ = 0 needs every bin to have some mass
        w = ABBins.rebalance_weights(p.float(), lam)
        p = p / p.sum()
        assert float((p * w.double()).sum()) == pytest.approx(1.0, abs=1e-5)
    w = ABBins.rebalance_weights(prior, 0.5)
    q = bins.n_bins
    expected = 1 / (0.5 * prior.double() + 0.5 / q)
    expected = expected / (prior.double() * expected).sum()
    torch.testing.assert_close(w.double(), expected, rtol=1e-5, atol=0)
    assert w[prior.argmax()] == w.min() and w[prior == 0].max() == w.max()  # rare colours weigh more
    torch.testing.assert_close(ABBins.rebalance_weights(prior, 1.0), torch.ones(q))  # λ = 1: no rebalancing
    with pytest.raises(ValueError):
        ABBins.rebalance_weights(prior, 1.5)


# ----------------------------------------------------------------------------------------------------- KL loss


def test_kl_is_zero_at_the_target_and_positive_elsewhere(bins, real_ab):
    ab = real_ab[:2, :, :16, :16]
    kl = losses.build("kl")
    target = bins.encode(ab)
    perfect = torch.log(target.clamp_min(1e-12))  # logit -27.6 for empty bins: their mass is ~1e-12 each
    assert abs(kl(perfect, ab).item()) < 1e-5
    # scaling the logits of a perfect match sharpens it away from the target: KL grows
    assert kl(3 * perfect, ab).item() > 1e-3
    g = torch.Generator().manual_seed(0)
    assert kl(torch.randn(target.shape, generator=g), ab).item() > 0.5
    assert kl(perfect, ab.roll(1, dims=-1)).item() > 0.5  # another pixel's distribution


def test_kl_matches_a_dense_reference(bins, real_ab):
    """KL(t ‖ softmax(logits)) = Σ t (log t − log p), with t the brute-force soft encoding, per pixel."""
    ab = real_ab[:2, :, :8, :8]
    logits = torch.randn(2, bins.n_bins, 8, 8, generator=torch.Generator().manual_seed(1))
    t = brute_encode(ab, bins.centres).double()
    logp = torch.log_softmax(logits.double(), 1)
    ref = torch.where(t > 0, t * (torch.log(t.clamp_min(1e-300)) - logp), torch.zeros_like(t)).sum(1)
    got = losses.build("kl", reduction="none")(logits, ab)
    assert got.shape == (2, 8, 8)
    torch.testing.assert_close(got.double(), ref, atol=1e-4, rtol=1e-4)


def test_kl_rebalancing_weights_each_pixel_by_its_nearest_bin(bins, real_ab):
    ab = real_ab[:2, :, :8, :8]
    prior = bins.empirical_prior([real_ab])
    logits = torch.randn(2, bins.n_bins, 8, 8, generator=torch.Generator().manual_seed(2))
    plain = losses.build("kl", reduction="none")(logits, ab)
    rebal = losses.build("kl", reduction="none", rebalance=True, prior=prior)(logits, ab)
    # the prior is smoothed with a Gaussian of σ = 5 over the ab plane first (Zhang et al. 2016), here in numpy
    c = bins.centres.double().numpy()
    kern = np.exp(-((c[:, None, :] - c[None, :, :]) ** 2).sum(-1) / (2 * 5.0**2))
    smooth = kern @ prior.double().numpy()
    w = ABBins.rebalance_weights(torch.from_numpy(smooth / smooth.sum()).float(), 0.5)[bins.hard_index(ab)]
    torch.testing.assert_close(rebal, plain * w, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="prior"):
        losses.build("kl", rebalance=True)
    with pytest.raises(ValueError, match="261 bin logits"):
        losses.build("kl")(torch.zeros(1, 5, 4, 4), ab[:1, :, :4, :4])


def test_smoothing_keeps_a_distribution_and_spreads_a_spike(bins):
    spike = torch.zeros(bins.n_bins)
    spike[100] = 1.0
    out = bins.smooth(spike)
    assert abs(float(out.sum()) - 1) < 1e-5 and (out >= 0).all()
    d = (bins.centres - bins.centres[100]).norm(dim=1)
    assert int(out.argmax()) == 100 and float(out[d == 10].sum()) > 0.3  # the 4 neighbours at 10: e^-2 each
    assert float(out[d > 30].sum()) < 1e-6


def test_decode_at_temperature_zero_is_the_mode(bins):
    logits = torch.randn(2, bins.n_bins, 3, 3, generator=torch.Generator().manual_seed(3))
    got = bins.decode(logits, 0)
    want = bins.centres[logits.argmax(1)].permute(0, 3, 1, 2)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(bins.decode(logits, 1e-4), want, atol=1e-3, rtol=0)


# ------------------------------------------------------------------------------------------- property-based

_ab = st.floats(-130.0, 130.0, allow_nan=False, allow_infinity=False)
_BINS: dict = {}


def _bins(k: int, sigma: float) -> ABBins:
    if (k, sigma) not in _BINS:
        _BINS[k, sigma] = ABBins(sigma=sigma, neighbours=k)
    return _BINS[k, sigma]


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(_ab, _ab), min_size=1, max_size=12), st.integers(1, 8), st.sampled_from([2.0, 5.0, 10.0]))
def test_encoding_properties_on_arbitrary_ab(points, k, sigma):
    """For any ab in [-130, 130]² (where the lookup is exact): k distinct bins per pixel, the first the nearest
    (brute force), the k the k nearest (compared by distance, so ties are fine), weights that sum to 1 and equal the
    float64 Gaussian weights of those distances (far outside the gamut, float32 may round distant ones to 0)."""
    b = _bins(k, sigma)
    ab = torch.tensor(points, dtype=torch.float32).T.reshape(1, 2, 1, -1)
    idx, w = b.encode_sparse(ab)
    n = len(points)
    assert idx.shape == w.shape == (1, k, 1, n)
    idx, w = idx[0, :, 0].T, w[0, :, 0].T  # N×k
    assert all(len(set(row)) == k for row in idx.tolist())
    torch.testing.assert_close(w.sum(1), torch.ones(n), atol=1e-5, rtol=0)
    d2 = torch.cdist(ab[0, :, 0].T.double(), b.centres.double()) ** 2  # N×Q
    best = torch.topk(d2, k, dim=1, largest=False).values
    chosen = d2.gather(1, idx)
    torch.testing.assert_close(chosen[:, 0], best[:, 0], atol=1e-2, rtol=1e-5)  # nearest first
    torch.testing.assert_close(chosen.sort(1).values, best, atol=1e-2, rtol=1e-5)
    expected = torch.softmax(-chosen / (2 * sigma**2), dim=1)
    torch.testing.assert_close(w.double(), expected, atol=1e-5, rtol=0)
    dense = b.encode(ab)[0, :, 0].T
    assert ((dense > 0).sum(1) <= k).all() and ((dense > 0).sum(1) >= 1).all()
    torch.testing.assert_close(dense.sum(1), torch.ones(n), atol=1e-5, rtol=0)
