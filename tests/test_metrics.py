"""Metrics of ``bench.metrics.compute`` against independent numpy / scikit-image implementations, on real photos."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage.color import lab2rgb, rgb2lab
from skimage.metrics import structural_similarity

from bench.data.sources import BUNDLED
from bench.metrics.compute import (
    colourfulness, evaluate, evaluate_grey, grey_colorizer, psnr_per_image, score_set, ssim_per_image)


def np_psnr(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """10·log10(1 / MSE) per image of ``N×…`` arrays in [0, 1]."""
    mse = ((pred.astype(np.float64) - target.astype(np.float64)) ** 2).reshape(len(pred), -1).mean(1)
    return 10 * np.log10(1.0 / mse)


def np_colourfulness(rgb: np.ndarray) -> float:
    """Hasler & Süsstrunk (2003) on one ``H×W×3`` image in 0-255: rg = R − G, yb = (R + G)/2 − B,
    M = sqrt(σ_rg² + σ_yb²) + 0.3 sqrt(μ_rg² + μ_yb²) (population standard deviations)."""
    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    rg, yb = r - g, 0.5 * (r + g) - b
    return float(np.sqrt(rg.std() ** 2 + yb.std() ** 2) + 0.3 * np.sqrt(rg.mean() ** 2 + yb.mean() ** 2))


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    """A real photo (the bundled kodim05, 384×256), read by PIL and cropped to 128×192: ``H×W×3`` uint8."""
    with Image.open(BUNDLED / "kodim05.png") as im:
        return np.asarray(im.convert("RGB"))[100:228, 200:392].copy()


def _t(a: np.ndarray) -> torch.Tensor:
    """``N×H×W×3`` → ``N×3×H×W``."""
    return torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2)))


def test_psnr_matches_numpy(real_batch):
    target = real_batch.float() / 255.0
    g = torch.Generator().manual_seed(0)
    pred = (target + 0.05 * torch.randn(target.shape, generator=g)).clamp(0, 1)
    pred[0] = target[0].flip(-1)  # a very different error level per image
    got = psnr_per_image(pred, target)
    assert got.shape == (len(target),)
    want = np_psnr(pred.numpy(), target.numpy())
    np.testing.assert_allclose(got.numpy(), want, atol=1e-3)
    assert got[0] < got[1:].min()


def test_psnr_of_one_uint8_level_everywhere():
    """An error of one 8-bit level on every pixel: PSNR = 20·log10(255) = 48.13 dB."""
    x = torch.full((1, 3, 8, 8), 100 / 255)
    assert psnr_per_image(x + 1 / 255, x).item() == pytest.approx(20 * np.log10(255), abs=1e-3)


def test_grey_baseline_on_a_real_photo_matches_skimage(photo):
    """ab = 0 with the photo's own L: recomputed with skimage (rgb2lab → a = b = 0 → lab2rgb) and numpy PSNR."""
    lab = rgb2lab(photo)
    lab[..., 1:] = 0
    grey = np.clip(lab2rgb(lab), 0, 1)
    want = np_psnr(grey[None], photo[None] / 255.0)[0]
    got = evaluate_grey(_t(photo[None])).per_image
    assert got["psnr"][0] == pytest.approx(want, abs=0.01)
    assert got["colourfulness"][0] == pytest.approx(np_colourfulness(grey * 255), abs=0.05)
    assert got["colourfulness"][0] < 0.5  # grey has (almost) no colour
    assert 15 < want < 40


def test_colourfulness_matches_numpy(real_batch):
    rgb = real_batch.float() / 255.0
    got = colourfulness(rgb)
    want = [np_colourfulness(x) for x in real_batch.permute(0, 2, 3, 1).numpy()]
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-4, atol=1e-3)
    assert colourfulness(torch.full((1, 3, 4, 4), 0.5)).item() == pytest.approx(0.0, abs=1e-4)


def np_ssim_map(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Wang et al. (2004) SSIM map of one channel: Gaussian window σ 1.5 truncated at 3.5 σ (11 taps), mirror padding
    at the borders, C1 = 0.01², C2 = 0.03² (data range 1), population (co)variances."""
    from scipy.ndimage import gaussian_filter

    f = lambda z: gaussian_filter(z, 1.5, truncate=3.5, mode="mirror")  # noqa: E731
    mx, my = f(x), f(y)
    sxx, syy, sxy = f(x * x) - mx**2, f(y * y) - my**2, f(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    return ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))


def test_ssim_matches_a_scipy_reference(real_batch):
    """SSIM per image = the mean of the SSIM map over all pixels and channels (torchmetrics ≥ 1.x: mirror-padded
    borders included). skimage's ``structural_similarity`` (like Wang's MATLAB code) averages only the interior,
    5 px away from the borders: that agrees with the interior of our reference map, and differs from the full mean
    by up to ~0.05 on 64-px crops."""
    target = real_batch[:4].float() / 255.0
    g = torch.Generator().manual_seed(1)
    pred = (target + 0.08 * torch.randn(target.shape, generator=g)).clamp(0, 1)
    got = ssim_per_image(pred, target)
    maps = [np.stack([np_ssim_map(p[c].double().numpy(), t[c].double().numpy()) for c in range(3)])
            for p, t in zip(pred, target)]
    np.testing.assert_allclose(got.numpy(), [m.mean() for m in maps], atol=1e-4)
    sk = [structural_similarity(p.permute(1, 2, 0).double().numpy(), t.permute(1, 2, 0).double().numpy(),
                                data_range=1.0, channel_axis=2, gaussian_weights=True, sigma=1.5,
                                use_sample_covariance=False) for p, t in zip(pred, target)]
    np.testing.assert_allclose([m[:, 5:-5, 5:-5].mean() for m in maps], sk, atol=1e-6)
    torch.testing.assert_close(ssim_per_image(target, target), torch.ones(4), atol=1e-4, rtol=0)


def test_score_and_evaluate_use_true_lightness(real_batch):
    """A model that predicts the true ab scores the round-trip PSNR (> 50 dB); ab = 0 scores the grey baseline."""
    from bench.data.colour import split_lab

    images = real_batch[:4]
    ab_true = split_lab(images.float() / 255.0)[1]

    class Oracle(torch.nn.Module):
        """Returns the given ab, batch after batch."""

        needs_reference = False

        def __init__(self, ab):
            super().__init__()
            self.ab, self.at = ab, 0

        def forward(self, L):
            out = self.ab[self.at : self.at + len(L)]
            self.at += len(L)
            return out

        def to_ab(self, out):
            return out

    perfect = evaluate(Oracle(ab_true), images, "cpu", batch_size=3).per_image
    assert min(perfect["psnr"]) > 50
    grey = evaluate(Oracle(torch.zeros_like(ab_true)), images, "cpu", batch_size=3).per_image
    np.testing.assert_allclose(grey["psnr"], evaluate_grey(images).per_image["psnr"], atol=1e-4)
    s = score_set(grey_colorizer, images, "cpu", batch_size=3)
    # without networks: the table's per-image metrics that need none, and ΔCF (lpips, fid, kid need a network)
    assert set(s.per_image) == {"psnr", "ssim", "colourfulness", "delta_e2000", "spatial_colour",
                                "colourfulness_ddcolor"}
    assert s.per_set["delta_cf"] > 0 and np.isnan(s.per_set["fid"])
    assert s.per_image["spatial_colour"] == [0.0] * 4  # grey is a constant colour: no spatial colour
    # pooled PSNR: -10 log10 of the MSE over every pixel of the set (numpy), not the mean of per-image PSNRs
    target = images.double().numpy() / 255.0
    from bench.data.colour import merge_lab

    L = split_lab(images.float() / 255.0)[0]
    pred = merge_lab(L, torch.zeros_like(ab_true)).double().numpy()
    assert s.per_set["psnr_pooled"] == pytest.approx(-10 * np.log10(np.mean((pred - target) ** 2)), abs=1e-3)


def test_spatial_colour_is_zero_for_any_tint_and_one_for_the_truth(real_batch):
    from bench.data.colour import merge_lab, split_lab
    from bench.metrics.compute import oracle_tint_colorizer, spatial_colour

    images = real_batch[:3]
    target = images.float() / 255.0
    L, ab = split_lab(target)
    assert torch.allclose(spatial_colour(target, target), torch.ones(3), atol=1e-4)
    tint = oracle_tint_colorizer(images)
    assert torch.allclose(spatial_colour(tint, target), torch.zeros(3), atol=2e-2)  # tint: 0 up to gamut clipping
    # numpy reference on a prediction with structure: half the true ab deviations, plus noise
    g = torch.Generator().manual_seed(0)
    pab = ab.mean(dim=(2, 3), keepdim=True) + 0.5 * (ab - ab.mean(dim=(2, 3), keepdim=True)) \
        + 5 * torch.randn(ab.shape, generator=g)
    pred = merge_lab(L, pab)
    from bench.data.colour import rgb_to_lab

    p = rgb_to_lab(pred)[:, 1:].double().numpy().reshape(3, -1)
    t = rgb_to_lab(target)[:, 1:].double().numpy().reshape(3, -1)
    pa = rgb_to_lab(pred)[:, 1:].double().numpy().reshape(3, 2, -1)
    ta = rgb_to_lab(target)[:, 1:].double().numpy().reshape(3, 2, -1)
    pa, ta = pa - pa.mean(-1, keepdims=True), ta - ta.mean(-1, keepdims=True)
    want = (pa * ta).sum((1, 2)) / np.sqrt((pa**2).sum((1, 2)) * (ta**2).sum((1, 2)))
    assert p.shape == t.shape
    np.testing.assert_allclose(spatial_colour(pred, target).numpy(), want, atol=1e-5)
    assert (want > 0.3).all()


def test_ddcolor_colourfulness_uses_absolute_opponent_channels(real_batch):
    from bench.metrics.compute import colourfulness_ddcolor

    x = real_batch[:2].double().numpy()
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    rg, yb = np.abs(r - g).reshape(2, -1), np.abs(0.5 * (r + g) - b).reshape(2, -1)
    want = np.sqrt(rg.std(1) ** 2 + yb.std(1) ** 2) + 0.3 * np.sqrt(rg.mean(1) ** 2 + yb.mean(1) ** 2)
    np.testing.assert_allclose(colourfulness_ddcolor(real_batch[:2].float() / 255.0).numpy(), want, rtol=1e-4)


# ------------------------------------------------------------------------------------------------------------ CIEDE2000
KODAK = Path(__file__).resolve().parent.parent / "bench" / "assets" / "kodak24"


def _kodak(name: str) -> np.ndarray:
    with Image.open(KODAK / name) as im:
        return np.asarray(im.convert("RGB"))


def _hwc(t: torch.Tensor) -> np.ndarray:
    return t.permute(0, 2, 3, 1).double().numpy()


@pytest.mark.parametrize("name", ["kodim03.png", "kodim14.png", "kodim23.png"])
def test_delta_e2000_matches_skimage_on_real_photos(name):
    """Per pixel, on the Lab of a bundled Kodak photo against three colorizations of it: grey (ab = 0, every pair
    achromatic on one side), desaturated with a hue shift, and ab with the sign of b flipped (hue differences
    across ±180°): max |ours − skimage.color.deltaE_ciede2000| ≤ 1e-3."""
    from skimage.color import deltaE_ciede2000

    from bench.data.colour import delta_e2000

    lab = rgb2lab(_kodak(name)[::2, ::2])
    variants = []
    for f in (lambda a, b: (0 * a, 0 * b), lambda a, b: (0.6 * a + 7, 0.6 * b - 3), lambda a, b: (a, -b)):
        v = lab.copy()
        v[..., 1], v[..., 2] = f(lab[..., 1], lab[..., 2])
        variants.append(v)
    t = lambda x: torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None]  # noqa: E731
    for v in variants:
        got = delta_e2000(t(lab), t(v))[0].numpy()
        want = deltaE_ciede2000(lab, v)
        assert np.abs(got - want).max() <= 1e-3
        assert want.mean() > 1  # real colour differences, not a trivial zero


def test_delta_e2000_per_image_metric_matches_skimage():
    """The metric as used: RGB in [0, 1] → Lab (ours, float32) → mean CIEDE2000 over pixels, against skimage's
    rgb2lab + deltaE_ciede2000 on the same RGB, within 1e-3 per image."""
    from skimage.color import deltaE_ciede2000

    from bench.metrics.compute import delta_e2000_per_image

    target = np.stack([_kodak(n)[:96, :96] for n in ("kodim05.png", "kodim19.png")]) / 255.0
    lab = rgb2lab(target)
    lab[..., 1:] *= 0.5
    pred = np.clip(lab2rgb(lab), 0, 1)  # a washed-out colorization
    got = delta_e2000_per_image(_t(pred).float(), _t(target).float()).numpy()
    want = [deltaE_ciede2000(rgb2lab(p), rgb2lab(t)).mean() for p, t in zip(pred, target)]
    np.testing.assert_allclose(got, want, atol=1e-3)
    assert delta_e2000_per_image(_t(target).float(), _t(target).float()).abs().max() < 1e-6


@pytest.mark.parametrize("lab1, lab2, want", [
    # Sharma, Wu & Dalal (2005), Table 1: pairs 1, 7, 17 and 25
    ((50.0, 2.6772, -79.7751), (50.0, 0.0, -82.7485), 2.0425),
    ((50.0, 0.0, 0.0), (50.0, -1.0, 2.0), 2.3669),
    ((50.0, 2.5, 0.0), (73.0, 25.0, -18.0), 27.1492),
    ((60.2574, -34.0099, 36.2677), (60.4626, -34.1751, 39.4387), 1.2644),
])
def test_delta_e2000_on_published_test_pairs(lab1, lab2, want):
    from bench.data.colour import delta_e2000

    as_t = lambda v: torch.tensor(v, dtype=torch.float64).view(1, 3, 1, 1)  # noqa: E731
    assert delta_e2000(as_t(lab1), as_t(lab2)).item() == pytest.approx(want, abs=1e-4)
