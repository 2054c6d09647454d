"""The AdaIN losses (Huang & Belongie 2017) for colorization: a content term on relu4_1 and a style term on the
channel statistics of relu1_1 … relu4_1 of a frozen VGG-19.

For colorization the images are built in RGB from the true L and an ab: the *output* is merge(L, predicted ab),
the *style image* is the true colour image (``rgb``), and the *AdaIN target* t is, by default, the relu4_1
features of the true image. That is the paper's t = AdaIN(f(c), f(s)) with content = style = the true image
(AdaIN(x, x) = x): in colorization the true image is both the layout and the colour statistics we want. With
``target="grey"``, t = AdaIN(f(grey), f(rgb)) instead, the paper's recipe with the greyscale input as content.
A colour reference, where a model has one, is only an input: the loss always compares with the truth, whose
statistics the reference stands in for at test time.

    L_content = mean (f4(out) − t)²
    L_style   = Σ_{i=1..4} mean (μ(f_i(out)) − μ(f_i(s)))² + mean (σ(f_i(out)) − σ(f_i(s)))²
    adain       = loss_weight · (L_content + style_weight · L_style)
    adain_style = loss_weight · style_weight · L_style

``adain_style`` has no content term, so it adds to a pixel loss: ``"mse+10*adain_style"``.
"""
from __future__ import annotations

import torch
from torch import nn

from bench.data.colour import lab_to_rgb
from models.adain import adain, channel_stats
from models.vgg import VGG19Features

from .base import check_reduction, reduce, rgb_images
from .registry import Tunable, register_loss

TARGETS = ("true", "grey")


def content_term(out_feat: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample MSE between output features and the AdaIN target (``B``)."""
    return (out_feat.float() - target.float()).pow(2).flatten(1).mean(dim=1)


def style_term(out_feats: list[torch.Tensor], style_feats: list[torch.Tensor]) -> torch.Tensor:
    """Per-sample sum over layers of MSE(mean) + MSE(std) between output and style features (``B``)."""
    total = 0.0
    for fo, fs in zip(out_feats, style_feats, strict=True):
        mo, so = channel_stats(fo)
        ms, ss = channel_stats(fs)
        total = total + (mo - ms).pow(2).flatten(1).mean(dim=1) + (so - ss).pow(2).flatten(1).mean(dim=1)
    return total


class _AdaINColourLoss(nn.Module):
    """Shared machinery: a frozen VGG-19 to relu4_1 and the RGB images of the output and the truth.

    Args:
        style_weight: λ, the weight of the style term.
        loss_weight: factor applied to the reduced loss.
        reduction: ``"mean"`` over the batch (default), ``"sum"`` or ``"none"`` (one value per image, ``B×1×1×1``).
        encoder_weights: weights of the loss's VGG-19: ``"none"`` (a fixed, seeded random VGG; recorded as not
            pretrained), ``"imagenet"`` or a path (missing weights raise ``EncoderWeightsError``). The trainer passes
            the cell's ``encoder_weights`` unless the loss parameters set it.
        vgg_width: channel multiplier of the loss's VGG (pretrained needs 1.0); the trainer passes the cell's
            ``width`` unless set, so the CPU preset uses a cheap random VGG and the paper preset the real one.
    """

    head = "ab"
    #: registry metadata: ``bench.tune`` searches λ on a log scale, and runs.csv and the leaderboard show it
    tunable = {"style_weight": Tunable(low=1e-2, high=1e3, log=True, symbol="λ", label="style weight λ")}
    shown = ("style_weight",)

    @classmethod
    def check_args(cls, style_weight: float = 1.0, reduction: str = "mean", vgg_width: float = 1.0, **_) -> None:
        """Registry metadata: refuse a ``style_weight``, ``reduction`` or ``vgg_width`` before the loss is built.

        Args:
            style_weight, reduction, vgg_width: as for the class; other parameters are ignored.
        """
        check_reduction(reduction)
        if not style_weight > 0:
            raise ValueError(f"style_weight must be positive, got {style_weight}")
        if not 0 < vgg_width <= 4:
            raise ValueError(f"vgg_width must be in (0, 4], got {vgg_width}")

    def __init__(self, style_weight: float = 1.0, loss_weight: float = 1.0, reduction: str = "mean",
                 encoder_weights: str | None = "none", vgg_width: float = 1.0):
        super().__init__()
        _AdaINColourLoss.check_args(style_weight=style_weight, reduction=reduction, vgg_width=vgg_width)
        self.style_weight = float(style_weight)
        self.loss_weight = loss_weight
        self.reduction = reduction
        self.vgg = VGG19Features(encoder_weights, vgg_width, frozen=True)
        self.encoder_pretrained = self.vgg.pretrained

    def images(self, pred: torch.Tensor, target_ab: torch.Tensor, L: torch.Tensor | None,
               rgb: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(output RGB with a gradient path to ``pred``, true RGB): both ``B×3×H×W`` in [0, 1]."""
        # The clamp only stops gradients of out-of-gamut pixels (the pixel loss, if any, still pulls those).
        return rgb_images(self.name, pred, target_ab, L, rgb, clamp=True)

    def finish(self, per_sample: torch.Tensor) -> torch.Tensor:
        # One value per image, shaped B×1×1×1 so that reduction="none" broadcasts against a pixel loss's B×2×H×W in
        # a composite spec (and the composite's mean stays the sum of the terms' means).
        return self.loss_weight * reduce(per_sample.view(-1, 1, 1, 1), self.reduction)


@register_loss("adain")
class AdaINLoss(_AdaINColourLoss):
    """L_content + λ · L_style on a frozen VGG-19 (see the module docstring for what t and the style image are).

    Args:
        style_weight: λ (the paper uses 10).
        target: ``"true"`` (t = relu4_1 of the true image, default) or ``"grey"`` (t = AdaIN of the greyscale
            input's relu4_1 with the true image's statistics).
        loss_weight, reduction, encoder_weights, vgg_width: see :class:`_AdaINColourLoss`.
    """

    def __init__(self, style_weight: float = 10.0, target: str = "true", loss_weight: float = 1.0,
                 reduction: str = "mean", encoder_weights: str | None = "none", vgg_width: float = 1.0):
        super().__init__(style_weight, loss_weight, reduction, encoder_weights, vgg_width)
        self.check_args(target=target)
        self.target = target

    @classmethod
    def check_args(cls, target: str = "true", **params) -> None:
        """Registry metadata: the checks of :class:`_AdaINColourLoss`, and ``target`` one of ``TARGETS``.

        Args:
            target: as for the class; params: the other parameters.
        """
        super().check_args(**params)
        if target not in TARGETS:
            raise ValueError(f"target must be one of {', '.join(TARGETS)}, not {target!r}")

    def terms(self, pred, target_ab, L=None, rgb=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample (L_content, L_style), each ``B``, before λ and the reduction."""
        out, rgb = self.images(pred, target_ab, L, rgb)
        with torch.no_grad():  # the truth is a constant: no graph through its VGG pass
            true_feats = self.vgg(rgb)
            if self.target == "true":
                t = true_feats[-1]
            else:
                grey = lab_to_rgb(torch.cat([L.float(), torch.zeros_like(pred, dtype=torch.float32)], dim=1))
                t = adain(self.vgg(grey)[-1], true_feats[-1])
        out_feats = self.vgg(out)
        return content_term(out_feats[-1], t), style_term(out_feats, true_feats)

    def forward(self, pred: torch.Tensor, target_ab: torch.Tensor, L=None, rgb=None, **ctx) -> torch.Tensor:
        """``pred``, ``target_ab``: ``B×2×H×W`` ab in Lab units; ``L``: ``B×1×H×W``; ``rgb``: true ``B×3×H×W`` in
        [0, 1] (rebuilt from L and the target if absent)."""
        content, style = self.terms(pred, target_ab, L, rgb)
        return self.finish(content + self.style_weight * style)


@register_loss("adain_style")
class AdaINStyleLoss(_AdaINColourLoss):
    """λ · L_style alone: matches the output's VGG feature statistics to the true image's; add it to a pixel loss.

    Args:
        style_weight: λ (default 1, so that the spec's weight is λ: ``"mse+10*adain_style"``).
        loss_weight, reduction, encoder_weights, vgg_width: see :class:`_AdaINColourLoss`.
    """

    def forward(self, pred: torch.Tensor, target_ab: torch.Tensor, L=None, rgb=None, **ctx) -> torch.Tensor:
        out, rgb = self.images(pred, target_ab, L, rgb)
        with torch.no_grad():
            style_feats = self.vgg(rgb)
        return self.finish(self.style_weight * style_term(self.vgg(out), style_feats))
