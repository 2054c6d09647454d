"""Absolute error on ab (or RGB, `space="rgb"`): less prone than MSE to averaging towards grey."""
import torch.nn.functional as F

from .base import PixelLoss
from .registry import register_loss


@register_loss("l1")
class L1Loss(PixelLoss):
    """Absolute error between predicted and true ab (normalised by ``AB_SCALE``) or RGB; see ``PixelLoss``."""

    def elementwise(self, pred, target):
        return F.l1_loss(pred, target, reduction="none")
