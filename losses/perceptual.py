"""Perceptual (feature) loss: MSE between VGG-16 activations of the colorization and of the truth.

Cheaper than LPIPS (the VGG stops at relu3_3, no normalisation or learned weights): the classic "perceptual loss"
of Johnson et al. 2016 on RGB(true L, predicted ab) against the true RGB, ImageNet-normalised.
"""
from __future__ import annotations

import torch
from torch import nn

from models.vgg import VGG16_TAPS, RGBNorm, VGG16Taps, check_backbone

from .base import check_reduction, reduce, rgb_images
from .registry import register_loss


@register_loss("perceptual")
class PerceptualLoss(nn.Module):
    """Σ over layers of the mean squared difference of VGG-16 activations (default relu2_2 and relu3_3).

    Args:
        layers: VGG-16 taps (names of ``models.vgg.VGG16_TAPS``).
        backbone: ``"imagenet"`` (default; a missing checkpoint is an error) or ``"random"`` (asked for by name).
        loss_weight: factor applied to the reduced loss.
        reduction: ``"mean"`` over the batch (default), ``"sum"`` or ``"none"`` (one value per image, ``B×1×1×1``).
    """

    head = "ab"

    @classmethod
    def check_args(cls, layers=("relu2_2", "relu3_3"), backbone: str = "imagenet", reduction: str = "mean",
                   **_) -> None:
        """Registry metadata: refuse ``layers``, ``backbone`` or ``reduction`` before the loss is built.

        Args:
            layers, backbone, reduction: as for the class; other parameters are ignored.
        """
        unknown = [t for t in layers if t not in VGG16_TAPS]
        if unknown or not layers:
            raise ValueError(f"layers must be VGG-16 taps ({', '.join(VGG16_TAPS)}), got {list(layers)!r:.60}")
        check_backbone(backbone)
        check_reduction(reduction)

    def __init__(self, layers=("relu2_2", "relu3_3"), backbone: str = "imagenet", loss_weight: float = 1.0,
                 reduction: str = "mean"):
        super().__init__()
        self.reduction = check_reduction(reduction)
        self.backbone = check_backbone(backbone)
        self.loss_weight = loss_weight
        self.norm = RGBNorm()
        self.vgg = VGG16Taps(tuple(layers), backbone)

    def forward(self, pred: torch.Tensor, target_ab: torch.Tensor, L=None, rgb=None, **ctx) -> torch.Tensor:
        """Arguments as for the ``lpips`` loss."""
        out, rgb = rgb_images(self.name, pred, target_ab, L, rgb, clamp=True)
        with torch.no_grad():
            true_feats = self.vgg(self.norm(rgb))
        per_image = sum((a.float() - b.float()).pow(2).flatten(1).mean(dim=1)
                        for a, b in zip(self.vgg(self.norm(out)), true_feats, strict=True))
        return self.loss_weight * reduce(per_image.view(-1, 1, 1, 1), self.reduction)
