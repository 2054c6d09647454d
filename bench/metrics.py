"""Metrics: colorize held-out images and score them against the originals, per image (used by training and by the
``bench.evaluate`` command).

PSNR and SSIM are computed by torchmetrics on RGB in [0, 1] (data range 1.0), one value per image, then averaged.
RGB is rebuilt from the true L and the predicted ab, so only colour errors count. Colourfulness is the metric of
Hasler & Süsstrunk (2003) on 0-255 RGB. ``delta_e2000`` is the mean CIEDE2000 difference over the pixels (Lab of
both RGB images; lower is better). ``lpips`` is LPIPS-VGG (``models.lpips``; lower is better): it needs a VGG-16
backbone, ``imagenet`` or explicitly ``random``; when the ImageNet checkpoint is missing the values are NaN and the
run's ``lpips_backbone`` says ``missing`` (see :func:`lpips_metric`).
"""
from __future__ import annotations

import math

import torch
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from .colour import delta_e2000, merge_lab, rgb_to_lab, split_lab
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


def delta_e2000_per_image(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean CIEDE2000 difference over the pixels of each image of two ``B×3×H×W`` RGB batches in [0, 1]."""
    return delta_e2000(rgb_to_lab(pred), rgb_to_lab(target)).flatten(1).mean(dim=1).float()


_LPIPS: dict = {}


def lpips_metric(backbone: str, device) -> tuple[object | None, str]:
    """The LPIPS-VGG network of the ``lpips`` metric on ``device`` (built once per process) and its status.

    Args:
        backbone: ``"imagenet"`` or ``"random"`` (the configuration's ``lpips_backbone``).
        device: where the network runs.

    Returns:
        (network, ``"imagenet"`` | ``"random"``), or (None, ``"missing"``) when the ImageNet checkpoint cannot be
        had: the metric is then NaN and every row says so.
    """
    from models.lpips import LPIPS
    from models.vgg import EncoderWeightsError

    key = (backbone, str(device))
    if key not in _LPIPS:
        try:
            _LPIPS[key] = (LPIPS(backbone).to(device), backbone)
        except EncoderWeightsError:
            _LPIPS[key] = (None, "missing")
    return _LPIPS[key]


def score(pred_rgb: torch.Tensor, target_rgb: torch.Tensor, lpips_net=None) -> dict[str, torch.Tensor]:
    """All per-image metrics of a colorized batch against the originals (``lpips`` only with a network)."""
    pred_rgb, target_rgb = pred_rgb.float(), target_rgb.float()
    out = {
        "psnr": psnr_per_image(pred_rgb, target_rgb),
        "ssim": ssim_per_image(pred_rgb, target_rgb),
        "colourfulness": colourfulness(pred_rgb),
        "delta_e2000": delta_e2000_per_image(pred_rgb, target_rgb),
    }
    if lpips_net is not None:
        out["lpips"] = lpips_net(pred_rgb, target_rgb).float()
    return out


@torch.no_grad()
def colorize(model, L: torch.Tensor, ref: torch.Tensor | None = None) -> torch.Tensor:
    """Predicted ab for lightness ``L`` (``B×1×H×W``), in evaluation mode."""
    out = model(L, ref) if getattr(model, "needs_reference", False) else model(L)
    return model.to_ab(out)


@torch.no_grad()
def evaluate(model, images: torch.Tensor, device, batch_size: int = 16, refs: torch.Tensor | None = None,
             autocast_dtype: torch.dtype | None = None, lpips_net=None) -> dict[str, list[float]]:
    """Score a model on uint8 images (``N×3×H×W``), batch by batch; returns per-image lists of each metric.

    Args:
        model: a registered colorization model (switched to eval mode, then back).
        images: uint8 test images, already preprocessed (centre crops).
        device: where to run.
        batch_size: images per forward pass.
        refs: uint8 colour references, one per image, for models with ``needs_reference``.
        autocast_dtype: e.g. ``torch.bfloat16`` on CUDA; None for full precision.
        lpips_net: the network of :func:`lpips_metric`, to score ``lpips`` too (validation does without).
    """
    was_training = model.training
    model.eval()
    out: dict[str, list[float]] = {}
    try:
        for s in range(0, len(images), batch_size):
            u8 = images[s : s + batch_size].to(device)
            rgb = u8.float() / 255.0
            L, _ = split_lab(u8)
            ref = refs[s : s + batch_size].to(device).float() / 255.0 if refs is not None else None
            with autocast(device, autocast_dtype):
                ab = colorize(model, L, ref)
            for k, v in score(merge_lab(L, ab.float()), rgb, lpips_net).items():
                out.setdefault(k, []).extend(v.cpu().tolist())
    finally:
        model.train(was_training)
    return out


@torch.no_grad()
def evaluate_grey(images: torch.Tensor, device="cpu", batch_size: int = 16, lpips_net=None,
                  ab: tuple[float, float] = (0.0, 0.0)) -> dict[str, list[float]]:
    """A constant-colour baseline: the same ``ab`` at every pixel. ab = 0 (the default) is the greyscale baseline;
    the training images' mean ab is the mean-colour baseline (a global tint). Every colorizer must beat both."""
    out: dict[str, list[float]] = {}
    for s in range(0, len(images), batch_size):
        u8 = images[s : s + batch_size].to(device)
        rgb = u8.float() / 255.0
        L, true_ab = split_lab(u8)
        const = torch.tensor(ab, dtype=true_ab.dtype, device=true_ab.device).view(1, 2, 1, 1).expand_as(true_ab)
        for k, v in score(merge_lab(L, const), rgb, lpips_net).items():
            out.setdefault(k, []).extend(v.cpu().tolist())
    return out


def fill_missing_lpips(scores: dict[str, list[float]], lpips_net, n: int) -> dict[str, list[float]]:
    """``scores`` of ``n`` test images with ``lpips`` = NaN per image when :func:`lpips_metric` found no network (the
    ImageNet VGG-16 is missing; the row's ``lpips_backbone`` = ``missing`` says why): no number from another
    network, and no silently absent column."""
    if lpips_net is None:
        scores["lpips"] = [math.nan] * n
    return scores


@torch.no_grad()
def score_test(model, images: torch.Tensor, device, batch_size: int = 16,
               autocast_dtype: torch.dtype | None = None, lpips_net=None) -> dict[str, list[float]]:
    """Per-image test metrics of a trained model, scored the one way every result is: a reference-based model gets
    each image as its own colour reference, then is scored again with the next photo's (``psnr_ref_other``: how
    much colour the reference carries).

    Args:
        model: a registered colorization model.
        images: uint8 test images (``N×3×H×W``, centre crops).
        device: where to run.
        batch_size: images per forward pass (the training batch size: results do not depend on it beyond rounding).
        autocast_dtype: as in :func:`evaluate`.
        lpips_net: as in :func:`evaluate`.
    """
    needs_ref = getattr(model, "needs_reference", False)
    out = evaluate(model, images, device, batch_size, images if needs_ref else None, autocast_dtype, lpips_net)
    if needs_ref:
        out["psnr_ref_other"] = evaluate(model, images, device, batch_size, images.roll(1, 0), autocast_dtype)["psnr"]
    return out
