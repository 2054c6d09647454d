"""Metrics: colorize held-out images and score them against the originals, per image (used by training and by the
``bench.evaluate`` command).

PSNR and SSIM are computed by torchmetrics on RGB in [0, 1] (data range 1.0), one value per image, then averaged.
RGB is rebuilt from the true L and the predicted ab, so only colour errors count. Colourfulness is the metric of
Hasler & Süsstrunk (2003) on 0-255 RGB.
"""
from __future__ import annotations

import torch
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from .colour import merge_lab, split_lab
from .device import autocast


def psnr_per_image(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """PSNR (dB) of each image of two ``B×3×H×W`` batches in [0, 1]."""
    return peak_signal_noise_ratio(pred, target, data_range=1.0, reduction="none", dim=(1, 2, 3))


def ssim_per_image(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """SSIM (Gaussian window 11, σ 1.5) of each image of two ``B×3×H×W`` batches in [0, 1]."""
    return structural_similarity_index_measure(pred, target, data_range=1.0, reduction="none")


def colourfulness(rgb: torch.Tensor) -> torch.Tensor:
    """Hasler & Süsstrunk's colourfulness M = σ_rgyb + 0.3 μ_rgyb of each image (``B×3×H×W`` in [0, 1])."""
    x = rgb.float() * 255.0
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    rg = (r - g).flatten(1)
    yb = (0.5 * (r + g) - b).flatten(1)
    std = torch.sqrt(rg.std(dim=1, unbiased=False) ** 2 + yb.std(dim=1, unbiased=False) ** 2)
    mean = torch.sqrt(rg.mean(dim=1) ** 2 + yb.mean(dim=1) ** 2)
    return std + 0.3 * mean


def score(pred_rgb: torch.Tensor, target_rgb: torch.Tensor) -> dict[str, torch.Tensor]:
    """All per-image metrics of a colorized batch against the originals."""
    pred_rgb, target_rgb = pred_rgb.float(), target_rgb.float()
    return {
        "psnr": psnr_per_image(pred_rgb, target_rgb),
        "ssim": ssim_per_image(pred_rgb, target_rgb),
        "colourfulness": colourfulness(pred_rgb),
    }


@torch.no_grad()
def colorize(model, L: torch.Tensor, ref: torch.Tensor | None = None) -> torch.Tensor:
    """Predicted ab for lightness ``L`` (``B×1×H×W``), in evaluation mode."""
    out = model(L, ref) if getattr(model, "needs_reference", False) else model(L)
    return model.to_ab(out)


@torch.no_grad()
def evaluate(model, images: torch.Tensor, device, batch_size: int = 16, refs: torch.Tensor | None = None,
             autocast_dtype: torch.dtype | None = None) -> dict[str, list[float]]:
    """Score a model on uint8 images (``N×3×H×W``), batch by batch; returns per-image lists of each metric.

    Args:
        model: a registered colorization model (switched to eval mode, then back).
        images: uint8 test images, already preprocessed (centre crops).
        device: where to run.
        batch_size: images per forward pass.
        refs: uint8 colour references, one per image, for models with ``needs_reference``.
        autocast_dtype: e.g. ``torch.bfloat16`` on CUDA; None for full precision.
    """
    was_training = model.training
    model.eval()
    out: dict[str, list[float]] = {"psnr": [], "ssim": [], "colourfulness": []}
    try:
        for s in range(0, len(images), batch_size):
            u8 = images[s : s + batch_size].to(device)
            rgb = u8.float() / 255.0
            L, _ = split_lab(u8)
            ref = refs[s : s + batch_size].to(device).float() / 255.0 if refs is not None else None
            with autocast(device, autocast_dtype):
                ab = colorize(model, L, ref)
            for k, v in score(merge_lab(L, ab.float()), rgb).items():
                out[k] += v.cpu().tolist()
    finally:
        model.train(was_training)
    return out


@torch.no_grad()
def evaluate_grey(images: torch.Tensor, device="cpu", batch_size: int = 16) -> dict[str, list[float]]:
    """The greyscale baseline: ab = 0 everywhere. Every colorizer must beat it."""
    out: dict[str, list[float]] = {"psnr": [], "ssim": [], "colourfulness": []}
    for s in range(0, len(images), batch_size):
        u8 = images[s : s + batch_size].to(device)
        rgb = u8.float() / 255.0
        L, ab = split_lab(u8)
        for k, v in score(merge_lab(L, torch.zeros_like(ab)), rgb).items():
            out[k] += v.cpu().tolist()
    return out
