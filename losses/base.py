"""Shared pieces of the losses: the reduction rule, the ab normalisation, and the RGB images of a prediction."""
from __future__ import annotations

import torch
from torch import nn

from bench.data.colour import AB_SCALE, lab_to_rgb  # ab / AB_SCALE: losses get comparable, order-one magnitudes

#: where pixel losses are computed: on ab (divided by AB_SCALE), or on sRGB in [0, 1] rebuilt from (true L, ab).
SPACES = ("ab", "rgb")


def reduce(loss: torch.Tensor, reduction: str) -> torch.Tensor:
    """Apply ``"mean"``, ``"sum"`` or ``"none"`` to an element-wise loss."""
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    if reduction == "none":
        return loss
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', not {reduction!r}")


def check_reduction(reduction: str) -> str:
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', not {reduction!r}")
    return reduction


def _real(x: torch.Tensor) -> torch.Tensor:
    """float32, except that float64 stays float64 (gradient checks by finite differences run in float64)."""
    return x if x.dtype == torch.float64 else x.float()


def rgb_images(name: str, pred: torch.Tensor, target_ab: torch.Tensor, L: torch.Tensor | None,
               rgb: torch.Tensor | None = None, clamp: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(RGB of the prediction with a gradient path to ``pred``, true RGB): both ``B×3×H×W``.

    Args:
        name: the loss's name, for error messages.
        pred: predicted ab, ``B×2×H×W`` in Lab units.
        target_ab: true ab, same shape.
        L: true lightness ``B×1×H×W`` (required: the image is rebuilt with it).
        rgb: the true RGB in [0, 1]; rebuilt from ``L`` and ``target_ab`` when None.
        clamp: clip both images to [0, 1]. Clipping stops the gradient of out-of-gamut pixels (what feature losses
            want: their networks expect images); without it the conversion is smooth everywhere (pixel losses).
    """
    if L is None:
        raise ValueError(f"the {name} loss needs the lightness: call loss(pred, target_ab, L=L, rgb=rgb)")
    if pred.shape != target_ab.shape or pred.shape[1] != 2:
        raise ValueError(f"{name} expects ab predictions B×2×H×W like the target, got {tuple(pred.shape)} "
                         f"and {tuple(target_ab.shape)}")
    # In fp32 (or float64) outside autocast: the cube and the 1/2.4 power lose too much in bf16.
    with torch.autocast(device_type=pred.device.type, enabled=False):
        out = lab_to_rgb(torch.cat([_real(L), _real(pred)], dim=1), clamp=clamp)
        if rgb is None:
            with torch.no_grad():
                rgb = lab_to_rgb(torch.cat([_real(L), _real(target_ab)], dim=1), clamp=clamp)
    return out, _real(rgb)


class PixelLoss(nn.Module):
    """Base of the pixel-regression losses: ``loss_weight * reduce(f(pred, target))`` on ab or on RGB.

    Args:
        space: ``"ab"`` (default: predicted and true ab, divided by ``AB_SCALE``) or ``"rgb"`` (sRGB in [0, 1]
            rebuilt from the true L and each ab through the differentiable, unclipped Lab → RGB; the truth is
            rebuilt the same way, so a perfect prediction costs exactly 0).
        loss_weight: factor applied to the reduced loss.
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"``.
    """

    head = "ab"

    @classmethod
    def check_args(cls, space: str = "ab", reduction: str = "mean", **_) -> None:
        """Registry metadata: refuse a ``space`` or ``reduction`` this loss does not know, before it is built.

        Args:
            space, reduction: as for the class; other parameters are ignored.
        """
        if space not in SPACES:
            raise ValueError(f"space must be one of {', '.join(SPACES)}, not {space!r}")
        check_reduction(reduction)

    def __init__(self, space: str = "ab", loss_weight: float = 1.0, reduction: str = "mean"):
        super().__init__()
        self.check_args(space=space, reduction=reduction)
        self.space = space
        self.loss_weight = loss_weight
        self.reduction = check_reduction(reduction)

    def elementwise(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, pred: torch.Tensor, target_ab: torch.Tensor, L: torch.Tensor | None = None, **ctx) -> torch.Tensor:
        """Loss between predicted and true ab, both ``B×2×H×W`` in CIE Lab units (``L`` needed for ``space="rgb"``)."""
        if pred.shape != target_ab.shape:
            raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target_ab.shape)} differ in shape")
        if self.space == "rgb":
            out, true = rgb_images(self.name, pred, target_ab, L, None, clamp=False)
            loss = self.elementwise(out, true)
        else:
            loss = self.elementwise(_real(pred) / AB_SCALE, _real(target_ab) / AB_SCALE)
        return self.loss_weight * reduce(loss, self.reduction)
