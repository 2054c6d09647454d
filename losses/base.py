"""Shared pieces of the losses: the reduction rule and the ab normalisation."""
from __future__ import annotations

import torch
from torch import nn

#: ab values are divided by this before pixel losses, so that losses have comparable, order-one magnitudes.
AB_SCALE = 110.0


def reduce(loss: torch.Tensor, reduction: str) -> torch.Tensor:
    """Apply ``"mean"``, ``"sum"`` or ``"none"`` to an element-wise loss."""
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    if reduction == "none":
        return loss
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', not {reduction!r}")


class PixelLoss(nn.Module):
    """Base of the ab-regression losses: ``loss_weight * reduce(f(pred/AB_SCALE, target/AB_SCALE))``.

    Args:
        loss_weight: factor applied to the reduced loss.
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"``.
    """

    head = "ab"

    def __init__(self, loss_weight: float = 1.0, reduction: str = "mean"):
        super().__init__()
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"reduction must be 'mean', 'sum' or 'none', not {reduction!r}")
        self.loss_weight = loss_weight
        self.reduction = reduction

    def elementwise(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, pred: torch.Tensor, target_ab: torch.Tensor, **ctx) -> torch.Tensor:
        """Loss between predicted ab and true ab, both ``B×2×H×W`` in CIE Lab units."""
        if pred.shape != target_ab.shape:
            raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target_ab.shape)} differ in shape")
        loss = self.elementwise(pred.float() / AB_SCALE, target_ab.float() / AB_SCALE)
        return self.loss_weight * reduce(loss, self.reduction)
