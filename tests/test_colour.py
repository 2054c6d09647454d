"""sRGB ↔ CIE Lab (D65) in ``bench.data.colour`` against scikit-image, on random and real pixels, plus property-based
round trips (hypothesis).

Tolerances: our conversion runs in float32, skimage in float64. Measured differences are ~5e-5 Lab units for
RGB → Lab and ~4e-6 for Lab → RGB, so we assert 1e-3 Lab units and 1e-5 RGB units (0.0026 of an 8-bit level).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from skimage.color import lab2rgb, rgb2lab

from bench.data.colour import lab_to_rgb, merge_lab, rgb_to_lab, split_lab

LAB_ATOL = 1e-3
RGB_ATOL = 1e-5


def _hwc(x: torch.Tensor) -> np.ndarray:
    """``1×3×H×W`` tensor → ``H×W×3`` float64 array."""
    return x[0].permute(1, 2, 0).double().numpy()


def _bchw(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)[None]))


def test_rgb_to_lab_matches_skimage_on_random_pixels():
    """Random float RGB in [0, 1], including exact 0, 1 and values around the sRGB linear-segment knee (0.04045)."""
    rng = np.random.default_rng(0)
    rgb = rng.random((48, 48, 3))
    rgb[0, :8] = [[0, 0, 0], [1, 1, 1], [1, 0, 0], [0, 1, 0], [0, 0, 1], [0.04045, 0.04, 0.041], [0.5, 0.5, 0.5],
                  [0.001, 0.002, 0.0]]
    ours = _hwc(rgb_to_lab(_bchw(rgb).float()))
    np.testing.assert_allclose(ours, rgb2lab(rgb), atol=LAB_ATOL, rtol=0)


def test_rgb_to_lab_matches_skimage_on_every_uint8_level_and_real_pixels(real_batch):
    """uint8 input (the training fast path, a lookup table) and the same pixels as floats, against skimage."""
    levels = np.arange(256, dtype=np.uint8)
    grid = np.stack(np.meshgrid(levels, levels[::5], levels[::7], indexing="ij"), -1).reshape(-1, 1, 3)
    for u8 in (grid, real_batch.permute(0, 2, 3, 1).reshape(-1, 1, 3).numpy()):
        want = rgb2lab(u8)  # skimage scales uint8 by 1/255
        got_u8 = _hwc(rgb_to_lab(_bchw(u8)))
        got_f = _hwc(rgb_to_lab(_bchw(u8).float() / 255.0))
        np.testing.assert_allclose(got_u8, want, atol=LAB_ATOL, rtol=0)
        np.testing.assert_allclose(got_f, want, atol=LAB_ATOL, rtol=0)


def test_lab_to_rgb_matches_skimage(real_batch):
    """In-gamut Lab (from random and real RGB) back to RGB, against ``skimage.color.lab2rgb``."""
    rng = np.random.default_rng(1)
    rgb = np.concatenate([rng.random((64, 1, 3)), real_batch.permute(0, 2, 3, 1).reshape(-1, 1, 3).numpy() / 255.0])
    lab = rgb2lab(rgb)
    got = _hwc(lab_to_rgb(_bchw(lab).float()))
    np.testing.assert_allclose(got, lab2rgb(lab), atol=RGB_ATOL, rtol=0)
    np.testing.assert_allclose(got, rgb, atol=RGB_ATOL, rtol=0)


def test_out_of_gamut_lab_is_clipped_unless_asked():
    lab = torch.tensor([50.0, 120.0, -120.0]).view(1, 3, 1, 1)
    clipped = lab_to_rgb(lab)
    raw = lab_to_rgb(lab, clamp=False)
    assert (clipped >= 0).all() and (clipped <= 1).all()
    assert ((raw < 0) | (raw > 1)).any()
    np.testing.assert_allclose(_hwc(clipped), lab2rgb(_hwc(lab)), atol=1e-4)


def test_round_trip_on_real_photos(real_batch):
    """RGB → (L, ab) → RGB returns the photo to within 1e-4 (well under half an 8-bit level)."""
    rgb = real_batch.float() / 255.0
    L, ab = split_lab(rgb)
    assert L.shape == (len(rgb), 1, 64, 64) and ab.shape == (len(rgb), 2, 64, 64)
    torch.testing.assert_close(merge_lab(L, ab), rgb, atol=1e-4, rtol=0)
    assert torch.equal(torch.round(merge_lab(L, ab) * 255).to(torch.uint8), real_batch)


def test_grey_has_zero_chroma_and_gradients_are_finite():
    """Neutral greys map to a ≈ b ≈ 0 (within 0.005: the rows of the IEC matrix sum to the D65 white point only to
    4 digits, as in skimage); gradients exist everywhere, also at 0 and 1."""
    g = torch.linspace(0, 1, 11).view(1, 1, 1, 11).expand(1, 3, 1, 11).clone().requires_grad_(True)
    lab = rgb_to_lab(g)
    assert lab[:, 1:].abs().max() < 5e-3
    np.testing.assert_allclose(lab[0, 0, 0].detach().numpy(), rgb2lab(_hwc(g.detach()))[0, :, 0], atol=LAB_ATOL)
    lab.sum().backward()
    assert torch.isfinite(g.grad).all()
    x = torch.tensor([[50.0, 0.0, 0.0], [0.0, 0.0, 0.0], [100.0, 20.0, -30.0]]).T.reshape(1, 3, 1, 3).requires_grad_()
    lab_to_rgb(x, clamp=False).sum().backward()
    assert torch.isfinite(x.grad).all()


def test_shape_checks():
    with pytest.raises(ValueError, match="B×3×H×W"):
        rgb_to_lab(torch.zeros(3, 4, 4))
    with pytest.raises(ValueError, match="B×3×H×W"):
        lab_to_rgb(torch.zeros(1, 2, 4, 4))


# ------------------------------------------------------------------------------------------- property-based

_unit = st.floats(0.0, 1.0, allow_nan=False)
_colours = st.lists(st.tuples(_unit, _unit, _unit), min_size=1, max_size=16)

# The extremes of a and b over the sRGB gamut (skimage over the corners/edges of the RGB cube): a ∈ [-86.18, 98.24],
# b ∈ [-107.86, 94.48].
A_RANGE = (-86.19, 98.24)
B_RANGE = (-107.87, 94.48)


@settings(max_examples=50, deadline=None)
@given(_colours)
def test_lab_rgb_lab_round_trip_for_in_gamut_colours(colours):
    """In-gamut Lab (skimage's Lab of arbitrary sRGB colours) → our RGB → our Lab returns it (0.01 Lab units)."""
    rgb = np.array(colours, dtype=np.float64).reshape(-1, 1, 3)
    lab = rgb2lab(rgb)
    back = rgb_to_lab(lab_to_rgb(_bchw(lab).float()))
    np.testing.assert_allclose(_hwc(back), lab, atol=1e-2, rtol=0)


@settings(max_examples=50, deadline=None)
@given(_colours)
def test_rgb_to_lab_ranges(colours):
    """L ∈ [0, 100], a and b within the sRGB gamut's extremes, for any colour of the RGB cube."""
    lab = _hwc(rgb_to_lab(_bchw(np.array(colours, dtype=np.float64).reshape(-1, 1, 3)).float()))
    eps = 1e-3
    assert (lab[..., 0] >= -eps).all() and (lab[..., 0] <= 100 + eps).all()
    assert (lab[..., 1] >= A_RANGE[0] - eps).all() and (lab[..., 1] <= A_RANGE[1] + eps).all()
    assert (lab[..., 2] >= B_RANGE[0] - eps).all() and (lab[..., 2] <= B_RANGE[1] + eps).all()


def test_gamut_extremes_quoted_above():
    """The a/b extremes used by ``test_rgb_to_lab_ranges``, recomputed with skimage on a 33-level RGB cube."""
    v = np.linspace(0, 1, 33)
    cube = np.stack(np.meshgrid(v, v, v, indexing="ij"), -1).reshape(-1, 1, 3)
    lab = rgb2lab(cube)
    assert lab[..., 1].min() == pytest.approx(-86.18, abs=0.01) and lab[..., 1].max() == pytest.approx(98.23, abs=0.02)
    assert lab[..., 2].min() == pytest.approx(-107.86, abs=0.01) and lab[..., 2].max() == pytest.approx(94.48, abs=0.01)
