"""LPIPS-VGG (Zhang et al. 2018): the distance shared by the ``lpips`` loss and the ``lpips`` test metric.

d(x, y) = Σ_layers mean_{h,w} Σ_c w_c (x̂_chw − ŷ_chw)², where x̂ are the VGG-16 activations at relu1_2, relu2_2,
relu3_3, relu4_3 and relu5_3, each unit-normalised over its channels, and w are the learned linear weights of the
LPIPS paper (v0.1). The linear weights ship with torchmetrics (``lpips_models/vgg.pth``); the VGG-16 is
torchvision's ImageNet checkpoint (``vgg16-397923af.pth``) or, asked for by name, a seeded random one.
Images are RGB in [0, 1]; like the reference code they are mapped to [−1, 1] and shifted/scaled by LPIPS' own
constants (close to ImageNet's mean and std). Not a registered model: this file only defines the network.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .vgg import VGG16_TAPS, EncoderWeightsError, VGG16Taps, read_weights

# LPIPS' input scaling (on images in [−1, 1]), from the reference implementation.
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)


def lin_weights_path() -> Path:
    """The LPIPS-VGG linear-layer weights shipped inside the installed torchmetrics package."""
    import torchmetrics.functional.image.lpips as tm_lpips

    return Path(tm_lpips.__file__).parent / "lpips_models" / "vgg.pth"


class LPIPS(nn.Module):
    """LPIPS-VGG distance between two batches of RGB images in [0, 1], one value per image; frozen.

    Args:
        backbone: ``"imagenet"`` or ``"random"`` (see :class:`models.vgg.VGG16Taps`).
        seed: seed of the random backbone.
    """

    def __init__(self, backbone: str = "imagenet", seed: int = 0):
        super().__init__()
        self.vgg = VGG16Taps(tuple(VGG16_TAPS), backbone, seed)
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1), persistent=False)
        chans = [self.vgg.features[i - 1].out_channels for i in VGG16_TAPS.values()]
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in chans)
        path = lin_weights_path()
        state = read_weights(path, "reinstall torchmetrics, which ships it (pip install --force-reinstall torchmetrics)")
        try:
            for k, lin in enumerate(self.lins):
                lin.weight.data.copy_(state[f"lin{k}.model.1.weight"])
        except (KeyError, RuntimeError) as err:
            raise EncoderWeightsError(f"cannot read the LPIPS linear weights from {path} (shipped with torchmetrics): "
                                      f"{err}") from None
        self.backbone = backbone
        self.requires_grad_(False)
        self.eval()

    #: a fixed function that the configuration rebuilds identically (checkpoints leave its weights out)
    fixed_function = True

    def train(self, mode: bool = True) -> "LPIPS":
        return super().train(False)

    def features(self, rgb: torch.Tensor) -> list[torch.Tensor]:
        """Unit-normalised activations of ``rgb`` (``B×3×H×W`` in [0, 1]) at the five taps."""
        x = (rgb * 2 - 1 - self.shift) / self.scale
        # eps inside the square root as in the reference code: a zero activation vector stays finite
        return [f / torch.sqrt(1e-8 + f.pow(2).sum(dim=1, keepdim=True)) for f in self.vgg(x)]

    def distance(self, fx: list[torch.Tensor], fy: list[torch.Tensor]) -> torch.Tensor:
        """LPIPS from two lists of :meth:`features`: one value per image (``B``)."""
        return sum(lin((a - b).pow(2)).mean(dim=(1, 2, 3)) for lin, a, b in zip(self.lins, fx, fy, strict=True))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``x``, ``y``: ``B×3×H×W`` RGB in [0, 1] → LPIPS per image (``B``)."""
        return self.distance(self.features(x), self.features(y))
