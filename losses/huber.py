"""Huber (smooth L1) on ab: quadratic near zero, linear for large errors."""
import torch.nn.functional as F

from .base import PixelLoss
from .registry import register_loss


@register_loss("huber")
class HuberLoss(PixelLoss):
    """Huber loss on normalised ab.

    Args:
        delta: where the loss turns from quadratic to linear, in normalised ab units (0.1 ≈ 11 Lab units).
        loss_weight: factor applied to the reduced loss.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
    """

    def __init__(self, delta: float = 0.1, loss_weight: float = 1.0, reduction: str = "mean"):
        super().__init__(loss_weight=loss_weight, reduction=reduction)
        self.delta = delta

    def elementwise(self, pred, target):
        return F.huber_loss(pred, target, reduction="none", delta=self.delta)
