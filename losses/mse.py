"""Mean squared error on ab (the usual regression loss of colorization), or on RGB with `space="rgb"`."""
import torch.nn.functional as F

from .base import PixelLoss
from .registry import register_loss


@register_loss("mse")
class MSELoss(PixelLoss):
    """Squared error between predicted and true ab (normalised by ``AB_SCALE``) or RGB; see ``PixelLoss``."""

    def elementwise(self, pred, target):
        return F.mse_loss(pred, target, reduction="none")
