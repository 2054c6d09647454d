"""LPIPS-VGG as a training loss: the learned perceptual distance between RGB(true L, predicted ab) and the true RGB.

The network (VGG-16 + the LPIPS linear weights shipped with colorbench) is ``models.lpips.LPIPS``, the same one the
``lpips`` test metric uses. Ballester et al. 2022 train with it and report slightly better results on most metrics.
"""
from __future__ import annotations

import torch
from torch import nn

from models.lpips import LPIPS
from models.vgg import check_backbone

from .base import check_reduction, reduce, rgb_images
from .registry import register_loss


@register_loss("lpips")
class LPIPSLoss(nn.Module):
    """LPIPS-VGG distance per image between the colorization and the truth.

    Args:
        backbone: the VGG-16's weights: ``"imagenet"`` (default; torchvision's ``vgg16-397923af.pth`` from
            ``$TORCH_HOME/hub/checkpoints``, a missing file is an error) or ``"random"`` (a fixed seeded VGG, only
            when asked for: CPU tests and the quick preset; recorded as ``lpips_backbone``).
        loss_weight: factor applied to the reduced loss.
        reduction: ``"mean"`` over the batch (default), ``"sum"`` or ``"none"`` (one value per image, ``B×1×1×1``).
    """

    head = "ab"

    @classmethod
    def check_args(cls, backbone: str = "imagenet", reduction: str = "mean", **_) -> None:
        """Registry metadata: refuse a ``backbone`` or ``reduction`` before the loss is built.

        Args:
            backbone, reduction: as for the class; other parameters are ignored.
        """
        check_backbone(backbone)
        check_reduction(reduction)

    def __init__(self, backbone: str = "imagenet", loss_weight: float = 1.0, reduction: str = "mean"):
        super().__init__()
        self.reduction = check_reduction(reduction)
        self.backbone = check_backbone(backbone)
        self.loss_weight = loss_weight
        self.net = LPIPS(backbone)

    def forward(self, pred: torch.Tensor, target_ab: torch.Tensor, L=None, rgb=None, **ctx) -> torch.Tensor:
        """``pred``, ``target_ab``: ``B×2×H×W`` ab in Lab units; ``L``: ``B×1×H×W``; ``rgb``: true ``B×3×H×W`` in
        [0, 1] (rebuilt from L and the target if absent)."""
        out, rgb = rgb_images(self.name, pred, target_ab, L, rgb, clamp=True)
        with torch.no_grad():  # the truth is a constant: no graph through its VGG pass
            true_feats = self.net.features(rgb)
        d = self.net.distance(self.net.features(out), true_feats)
        # B×1×1×1 so that reduction="none" broadcasts against a pixel loss's B×2×H×W in a composite spec
        return self.loss_weight * reduce(d.float().view(-1, 1, 1, 1), self.reduction)
