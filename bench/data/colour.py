"""sRGB ↔ CIE Lab (D65) in torch, batched, on whatever device the tensors live on.

The formulas and constants are those of IEC 61966-2-1 (sRGB) and CIE 1976 L*a*b*, with the D65 white point
(0.95047, 1.0, 1.08883); they agree with ``skimage.color.rgb2lab`` to float32 precision (see tests/test_colour.py).
"""
from __future__ import annotations

import math

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
#: The scale of a and b: networks predict ab / AB_SCALE (order-one values) and pixel losses compare ab / AB_SCALE.
AB_SCALE = 110.0

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
    """Convert Lab (``B×3×H×W``) back to sRGB; out-of-gamut values are clipped to [0, 1] unless ``clamp=False``.

    Differentiable everywhere with ``clamp=False`` (both branches of each piecewise step have finite slopes; used by
    the RGB-space losses). Computes in float32, or in float64 for float64 input (gradient checks).
    """
    if lab.ndim != 4 or lab.shape[1] != 3:
        raise ValueError(f"expected a B×3×H×W Lab tensor, got shape {tuple(lab.shape)}")
    lab = lab if lab.dtype == torch.float64 else lab.float()
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


def delta_e2000(lab1: torch.Tensor, lab2: torch.Tensor) -> torch.Tensor:
    """CIEDE2000 colour difference (k_L = k_C = k_H = 1) of every pixel of two Lab batches (``B×3×H×W`` → ``B×H×W``).

    Sharma, Wu & Dalal (2005), computed in float64 (the hue branches compare angles with π). Where either colour is
    achromatic (C'₁C'₂ = 0) the hue difference is 0 and the mean hue is the sum of the hues, as in the standard.
    """
    if lab1.shape != lab2.shape or lab1.ndim != 4 or lab1.shape[1] != 3:
        raise ValueError(f"expected two B×3×H×W Lab tensors of one shape, got {tuple(lab1.shape)} and {tuple(lab2.shape)}")
    L1, a1, b1 = lab1.double().unbind(1)
    L2, a2, b2 = lab2.double().unbind(1)
    c_mean = 0.5 * (torch.hypot(a1, b1) + torch.hypot(a2, b2))
    g = 0.5 * (1 - torch.sqrt(c_mean**7 / (c_mean**7 + 25.0**7)))
    a1p, a2p = a1 * (1 + g), a2 * (1 + g)  # a stretched by the mean chroma; primes from here on
    C1, C2 = torch.hypot(a1p, b1), torch.hypot(a2p, b2)
    two_pi = 2 * math.pi
    h1, h2 = torch.atan2(b1, a1p), torch.atan2(b2, a2p)
    h1, h2 = torch.where(h1 < 0, h1 + two_pi, h1), torch.where(h2 < 0, h2 + two_pi, h2)

    L_mean = 0.5 * (L1 + L2)
    sl = 1 + 0.015 * (L_mean - 50) ** 2 / torch.sqrt(20 + (L_mean - 50) ** 2)
    dL = (L2 - L1) / sl

    C_mean = 0.5 * (C1 + C2)
    dC = (C2 - C1) / (1 + 0.045 * C_mean)

    chromatic = C1 * C2 != 0
    dh = h2 - h1
    dh = torch.where(dh > math.pi, dh - two_pi, torch.where(dh < -math.pi, dh + two_pi, dh))
    dh = torch.where(chromatic, dh, torch.zeros_like(dh))
    dH = 2 * torch.sqrt(C1 * C2) * torch.sin(dh / 2)
    h_sum = h1 + h2
    far = chromatic & ((h2 - h1).abs() > math.pi)  # the mean hue goes the short way round the circle
    h_mean = torch.where(far & (h_sum < two_pi), h_sum + two_pi, torch.where(far, h_sum - two_pi, h_sum))
    h_mean = torch.where(chromatic, 0.5 * h_mean, h_sum)
    t = (1 - 0.17 * torch.cos(h_mean - math.radians(30)) + 0.24 * torch.cos(2 * h_mean)
         + 0.32 * torch.cos(3 * h_mean + math.radians(6)) - 0.20 * torch.cos(4 * h_mean - math.radians(63)))
    dH = dH / (1 + 0.015 * C_mean * t)

    rc = 2 * torch.sqrt(C_mean**7 / (C_mean**7 + 25.0**7))
    d_theta = math.radians(30) * torch.exp(-(((torch.rad2deg(h_mean) - 275) / 25) ** 2))
    rt = -torch.sin(2 * d_theta) * rc
    return torch.sqrt((dL**2 + dC**2 + dH**2 + rt * dC * dH).clamp_min(0))
