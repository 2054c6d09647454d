"""Huber (smooth L1) on ab (or RGB): quadratic near zero, linear for large errors."""
import torch.nn.functional as F

from .base import PixelLoss
from .registry import register_loss


@register_loss("huber")
class HuberLoss(PixelLoss):
    """Huber loss on normalised ab.

    Args:
        delta: where the loss turns from quadratic to linear, in normalised ab units (0.1 ≈ 11 Lab units) or, with
            ``space="rgb"``, in RGB units (0.1 of the range).
        space: ``"ab"`` or ``"rgb"`` (see :class:`losses.base.PixelLoss`).
        loss_weight: factor applied to the reduced loss.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
    """

    def __init__(self, delta: float = 0.1, space: str = "ab", loss_weight: float = 1.0, reduction: str = "mean"):
        super().__init__(space=space, loss_weight=loss_weight, reduction=reduction)
        self.delta = delta

    def elementwise(self, pred, target):
        return F.huber_loss(pred, target, reduction="none", delta=self.delta)
