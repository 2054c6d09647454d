"""sRGB ↔ CIE Lab (D65) in torch, batched, on whatever device the tensors live on.

The formulas and constants are those of IEC 61966-2-1 (sRGB) and CIE 1976 L*a*b*, with the D65 white point
(0.95047, 1.0, 1.08883); they agree with ``skimage.color.rgb2lab`` to float32 precision (see tests/test_colour.py).
"""
from __future__ import annotations

import torch

_RGB_TO_XYZ = torch.tensor(
    [
        [0.412453, 0.357580, 0.180423],
        [0.212671, 0.715160, 0.072169],
        [0.019334, 0.119193, 0.950227],
    ],
    dtype=torch.float64,
)
_XYZ_TO_RGB = torch.linalg.inv(_RGB_TO_XYZ)
_WHITE = torch.tensor([0.95047, 1.0, 1.08883], dtype=torch.float64)
_EPS = 0.008856  # (6/29)^3, where the cube root turns linear
_KAPPA = 7.787  # slope of the linear segment: 1 / (3 (6/29)^2)


def _mix(m: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Apply a 3×3 colour matrix to the channel axis (dim 1) of a B×3×H×W tensor."""
    B, C, H, W = x.shape
    # A batched (3×3) @ (3×HW) matmul: several times faster on a CPU than the equivalent einsum.
    return torch.matmul(m.to(device=x.device, dtype=x.dtype), x.reshape(B, C, H * W)).view(B, 3, H, W)


def _srgb_to_linear(rgb: torch.Tensor) -> torch.Tensor:
    """Undo the sRGB transfer curve. uint8 input goes through an exact 256-entry table (the training fast path:
    one gather instead of a power per value); float input in [0, 1] through the formula."""
    if rgb.dtype == torch.uint8:
        v = torch.arange(256, dtype=torch.float64) / 255.0
        lut = torch.where(v > 0.04045, ((v + 0.055) / 1.055) ** 2.4, v / 12.92).float().to(rgb.device)
        return torch.index_select(lut, 0, rgb.flatten().int()).view(rgb.shape)
    rgb = rgb.float()
    return torch.where(rgb > 0.04045, ((rgb + 0.055) / 1.055).clamp_min(0) ** 2.4, rgb / 12.92)


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """Convert sRGB (``B×3×H×W``, float in [0, 1] or uint8) to Lab: L in [0, 100], a and b roughly in [-128, 127]."""
    if rgb.ndim != 4 or rgb.shape[1] != 3:
        raise ValueError(f"expected a B×3×H×W RGB tensor, got shape {tuple(rgb.shape)}")
    lin = _srgb_to_linear(rgb)
    # The white point is folded into the matrix: one 3×3 mix gives X/Xn, Y/Yn, Z/Zn.
    xyz = _mix(_RGB_TO_XYZ / _WHITE.view(3, 1), lin)
    if xyz.requires_grad:  # differentiable path (e.g. losses on generated images): no in-place steps
        f = torch.where(xyz > _EPS, xyz.clamp_min(_EPS).pow(1.0 / 3.0), xyz * _KAPPA + 16.0 / 116.0)
        fx, fy, fz = f.unbind(1)
        return torch.stack([116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)], dim=1)
    # In-place steps and a preallocated output: on a CPU the temporaries cost more than the arithmetic.
    # The linear segment is the tangent of the cube root at _EPS, so f(t) = cbrt(max(t, ε)) + κ·min(t − ε, 0)
    # equals the two-branch formula (to 3e-7) without a select.
    f = xyz.clamp_min(_EPS).pow_(1.0 / 3.0).add_(xyz.sub_(_EPS).clamp_max_(0.0).mul_(_KAPPA))
    fx, fy, fz = f.unbind(1)
    out = torch.empty_like(f)
    torch.mul(fy, 116.0, out=out[:, 0]).sub_(16.0)
    torch.sub(fx, fy, out=out[:, 1]).mul_(500.0)
    torch.sub(fy, fz, out=out[:, 2]).mul_(200.0)
    return out


def lab_to_rgb(lab: torch.Tensor, clamp: bool = True) -> torch.Tensor:
    """Convert Lab (``B×3×H×W``) back to sRGB; out-of-gamut values are clipped to [0, 1] unless ``clamp=False``."""
    if lab.ndim != 4 or lab.shape[1] != 3:
        raise ValueError(f"expected a B×3×H×W Lab tensor, got shape {tuple(lab.shape)}")
    lab = lab.float()
    fy = (lab[:, 0:1] + 16.0) / 116.0
    fx = fy + lab[:, 1:2] / 500.0
    fz = fy - lab[:, 2:3] / 200.0
    f = torch.cat([fx, fy, fz], dim=1)
    xyz = torch.where(f > _EPS ** (1.0 / 3.0), f**3, (f - 16.0 / 116.0) / _KAPPA)
    xyz = xyz * _WHITE.to(lab.device, lab.dtype).view(1, 3, 1, 1)
    lin = _mix(_XYZ_TO_RGB, xyz)
    rgb = torch.where(lin > 0.0031308, 1.055 * lin.clamp_min(0.0031308) ** (1.0 / 2.4) - 0.055, 12.92 * lin)
    return rgb.clamp(0.0, 1.0) if clamp else rgb


def split_lab(rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """RGB batch → (L ``B×1×H×W``, ab ``B×2×H×W``): what the network sees and what it must predict."""
    lab = rgb_to_lab(rgb)
    return lab[:, :1], lab[:, 1:]


def merge_lab(L: torch.Tensor, ab: torch.Tensor) -> torch.Tensor:
    """(L, ab) → RGB in [0, 1]: the colorization a user sees."""
    return lab_to_rgb(torch.cat([L.float(), ab.float()], dim=1))
