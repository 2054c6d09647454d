"""LPIPS-VGG (Zhang et al. 2018): the distance shared by the ``lpips`` loss and the ``lpips`` test metric.

d(x, y) = Σ_layers mean_{h,w} Σ_c w_c (x̂_chw − ŷ_chw)², where x̂ are the VGG-16 activations at relu1_2, relu2_2,
relu3_3, relu4_3 and relu5_3, each unit-normalised over its channels, and w are the learned linear weights of the
LPIPS paper (v0.1). The linear weights ship with colorbench (``models/assets/lpips/vgg.pth``: the LPIPS project's
file, BSD-2-Clause, checked against its ``SHA256SUMS`` before it is read); the VGG-16 is torchvision's ImageNet
checkpoint (``vgg16-397923af.pth``) or, asked for by name, a seeded random one.
Images are RGB in [0, 1]; like the reference code they are mapped to [−1, 1] and shifted/scaled by LPIPS' own
constants (close to ImageNet's mean and std). Not a registered model: this file only defines the network.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from torch import nn

from .vgg import VGG16_TAPS, EncoderWeightsError, VGG16Taps, read_weights

# LPIPS' input scaling (on images in [−1, 1]), from the reference implementation.
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)


#: The LPIPS-VGG v0.1 linear-layer weights shipped with colorbench, with their licence and ``SHA256SUMS`` beside.
LIN_WEIGHTS = Path(__file__).resolve().parent / "assets" / "lpips" / "vgg.pth"
#: What to do about a damaged or missing copy of the shipped file.
REINSTALL = "reinstall colorbench, which ships it (pip install --force-reinstall colorbench)"


def lin_weights_path() -> Path:
    """The LPIPS-VGG linear-layer weights shipped with colorbench (:data:`LIN_WEIGHTS`)."""
    return LIN_WEIGHTS


def expected_sha256(path: Path) -> str:
    """The SHA-256 that the ``SHA256SUMS`` file beside ``path`` lists for it.

    Args:
        path: the weights file.

    Raises:
        EncoderWeightsError: one line, when the manifest is missing or does not list the file.
    """
    manifest = Path(path).parent / "SHA256SUMS"
    try:
        lines = manifest.read_text().splitlines()
    except OSError as err:
        raise EncoderWeightsError(f"cannot read {manifest} ({type(err).__name__}); {REINSTALL}") from None
    for line in lines:
        digest, _, name = line.strip().partition("  ")
        if name.lstrip("*") == Path(path).name:
            return digest.lower()
    raise EncoderWeightsError(f"{manifest} does not list {Path(path).name}; {REINSTALL}")


def read_lin_weights(path: Path | None = None) -> dict[str, torch.Tensor]:
    """The linear-layer state dict, read with ``weights_only=True`` after its SHA-256 matched ``SHA256SUMS``.

    Args:
        path: the weights file (default :data:`LIN_WEIGHTS`).

    Raises:
        EncoderWeightsError: one line naming the file and what to do, when it is missing, changed or unreadable.
    """
    path = Path(path or LIN_WEIGHTS)
    want = expected_sha256(path)
    try:
        got = hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as err:
        raise EncoderWeightsError(f"cannot read weights file {path} ({type(err).__name__}); {REINSTALL}") from None
    if got != want:
        raise EncoderWeightsError(f"cannot read weights file {path}, damaged or replaced: its SHA-256 {got[:16]}... "
                                  f"is not the {want[:16]}... of SHA256SUMS; {REINSTALL}")
    return read_weights(path, REINSTALL)


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
        state = read_lin_weights(path)
        try:
            for k, lin in enumerate(self.lins):
                lin.weight.data.copy_(state[f"lin{k}.model.1.weight"])
        except (KeyError, RuntimeError) as err:
            raise EncoderWeightsError(f"cannot read the LPIPS linear weights from {path}: {err}; {REINSTALL}") from None
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
