"""VGG convolutional stacks (torchvision's layer layout) and the loading of their ImageNet weights.

The stacks are built here, layer for layer as ``torchvision.models.vgg*.features``, so that a width multiplier
can make small variants for CPUs while full-width stacks load torchvision's checkpoints unchanged.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

CFGS = {
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}
#: torchvision's ImageNet checkpoints (``VGG16_Weights.IMAGENET1K_V1``, ``VGG19_Weights.IMAGENET1K_V1``): read and
#: downloaded through torch.hub, so colorbench itself needs no torchvision
IMAGENET_URLS = {
    "vgg16": "https://download.pytorch.org/models/vgg16-397923af.pth",
    "vgg19": "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth",
}

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class EncoderWeightsError(RuntimeError):
    """Pretrained encoder weights were asked for but cannot be had."""


#: What to do about a damaged file in the torch hub cache.
REFETCH = "delete it, and it is fetched again (downloaded into the same place when online)"


def read_weights(path: Path, fix: str, mmap: bool = False) -> dict:
    """A state dict read with ``torch.load(weights_only=True)``, never anything else: a damaged or foreign file is
    an ``EncoderWeightsError`` of one line naming it and what to do, without torch's advice to reload it with
    ``weights_only=False`` (which must never be followed for a file of unknown origin).

    Args:
        path: the file.
        fix: what the user should do about a bad file (e.g. ``REFETCH``).
        mmap: map the file instead of reading it (a cheap check of its structure before a run).
    """
    try:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
        except RuntimeError:
            if not mmap:
                raise
            state = torch.load(path, map_location="cpu", weights_only=True)  # the legacy format cannot be mapped
    except Exception as err:  # UnpicklingError, a truncated zip, an unreadable file ...
        raise EncoderWeightsError(f"cannot read weights file {path}, damaged or not a plain state dict "
                                  f"({type(err).__name__}); {fix}") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise EncoderWeightsError(f"cannot read weights file {path}, it holds no state dict (tensors by name); {fix}")
    return state


def make_features(arch: str, width: float = 1.0, upto: int | None = None) -> tuple[nn.Sequential, list[int]]:
    """Build the VGG conv stack as an ``nn.Sequential`` with torchvision's indices.

    Args:
        arch: ``"vgg16"`` or ``"vgg19"``.
        width: channel multiplier (1.0 is the real VGG; pretrained weights need 1.0).
        upto: keep only the first ``upto`` layers (e.g. 21 for VGG-19 up to relu4_1).

    Returns:
        the stack and the number of output channels of each block (the channels before each pool).
    """
    if arch not in CFGS:
        raise ValueError(f"unknown VGG {arch!r}; available: {', '.join(CFGS)}")
    layers: list[nn.Module] = []
    block_channels: list[int] = []
    c_in, c_last = 3, 3
    for v in CFGS[arch]:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
            block_channels.append(c_last)
        else:
            c_out = max(4, int(round(v * width)))
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(inplace=True)]
            c_in = c_last = c_out
    if upto is not None:
        layers = layers[:upto]
    return nn.Sequential(*layers), block_channels


def imagenet_checkpoint_path(arch: str) -> Path:
    """Where torchvision keeps (or would download) the ImageNet checkpoint of ``arch``."""
    url = IMAGENET_URLS[arch]
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def _read_state_dict(arch: str, encoder_weights: str) -> dict[str, torch.Tensor]:
    if encoder_weights == "imagenet":
        path = imagenet_checkpoint_path(arch)
        if path.is_file():
            return read_weights(path, REFETCH)
        try:  # downloaded into the same place (as torchvision would) when there is a network
            return torch.hub.load_state_dict_from_url(IMAGENET_URLS[arch], progress=True, map_location="cpu",
                                                      weights_only=True)
        except Exception as err:  # URLError, socket errors, hash mismatch ...
            raise EncoderWeightsError(
                f"ImageNet weights for {arch} are not available offline: expected the file {path} "
                f"(TORCH_HOME={os.environ.get('TORCH_HOME', '~/.cache/torch')}), and downloading failed ({err}). "
                f"Copy {path.name} there, pass encoder_weights=PATH to a local file, or encoder_weights=none "
                f"for a random initialisation (recorded as not pretrained)."
            ) from None
    path = Path(encoder_weights).expanduser()
    if not path.is_file():
        raise EncoderWeightsError(f"encoder weights file {path} does not exist (encoder_weights must be none, imagenet or a path)")
    return read_weights(path, "pass a state dict saved by torch.save (tensors only), or encoder_weights=none")


def load_encoder_weights(features: nn.Sequential, arch: str, encoder_weights: str | None, width: float = 1.0) -> bool:
    """Load pretrained weights into a VGG stack built by :func:`make_features`.

    Args:
        features: the stack (possibly truncated with ``upto``).
        arch: ``"vgg16"`` or ``"vgg19"``.
        encoder_weights: ``"none"``/``None`` (random init), ``"imagenet"`` (torchvision's checkpoint, from the
            torch hub cache or downloaded) or a path to a state dict (a whole torchvision VGG or only its features).
        width: the stack's width multiplier; pretrained weights need 1.0.

    Returns:
        whether the stack now holds pretrained weights (recorded with every result).
    """
    if encoder_weights in (None, "", "none"):
        return False
    if width != 1.0:
        raise EncoderWeightsError(f"pretrained encoder weights need width=1.0, got width={width}")
    state = _read_state_dict(arch, str(encoder_weights))
    if any(k.startswith("features.") for k in state):
        state = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
    wanted = features.state_dict().keys()
    state = {k: v for k, v in state.items() if k in wanted}
    missing = [k for k in wanted if k not in state]
    if missing:
        raise EncoderWeightsError(f"encoder weights for {arch} lack {len(missing)} tensors (first: {missing[0]})")
    try:
        features.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise EncoderWeightsError(f"encoder weights do not fit {arch}: {err}") from None
    return True


def vgg_stack(arch: str, width: float = 1.0, encoder_weights: str | None = "none", upto: int | None = None,
              seed: int | None = None) -> tuple[nn.Sequential, list[int], bool]:
    """Build a VGG conv stack and give it its weights: pretrained (:func:`load_encoder_weights`), else torchvision's
    random initialisation (:func:`init_like_torchvision`).

    Args:
        arch, width, upto: as :func:`make_features`.
        encoder_weights: as :func:`load_encoder_weights`.
        seed: seed of the random initialisation (a fixed function, e.g. a loss's VGG); None: the global RNG (a
            network being trained: its training seed).

    Returns:
        the stack, the channels of each block (as :func:`make_features`) and whether it is pretrained.
    """
    features, block_channels = make_features(arch, width, upto)
    pretrained = load_encoder_weights(features, arch, encoder_weights, width)
    if not pretrained:
        init_like_torchvision(features, seed)
    return features, block_channels, pretrained


class RGBNorm(nn.Module):
    """RGB in [0, 1] (``B×3×H×W``) → ImageNet-normalised input."""

    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        return (rgb - self.mean) / self.std


class ImageNetNorm(RGBNorm):
    """L in [0, 100] (``B×1×H×W``) → the 3-channel, ImageNet-normalised input a VGG expects (grey as RGB)."""

    def forward(self, L: torch.Tensor) -> torch.Tensor:
        return super().forward((L / 100.0).expand(-1, 3, -1, -1))


# ----------------------------------------------------------------------------------------------------- VGG-19 features
# The AdaIN network and the AdaIN losses read a VGG-19 cut after relu4_1 (Huang & Belongie 2017) and tap the first
# ReLU of every block. Indices are torchvision's, so ImageNet checkpoints load unchanged.

VGG19_TAPS = {"relu1_1": 1, "relu2_1": 6, "relu3_1": 11, "relu4_1": 20}
VGG19_UPTO = VGG19_TAPS["relu4_1"] + 1


def init_like_torchvision(features: nn.Module, seed: int | None = 0) -> None:
    """Initialise conv layers as torchvision does (Kaiming normal, fan-out, zero bias), from a fixed seed
    (``seed=None``: from the global RNG).

    PyTorch's default conv init shrinks activations by roughly 6× in energy per layer, so a random VGG-19 would
    give relu4_1 features (and any loss on them) of ~1e-7. Kaiming keeps them order one. The private generator
    makes every random feature extractor the same function, whatever the global RNG state (the training seed).
    """
    g = None if seed is None else torch.Generator().manual_seed(seed)
    for m in features.modules():
        if isinstance(m, nn.Conv2d):
            with torch.no_grad():
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu", generator=g)
                if m.bias is not None:
                    m.bias.zero_()


class VGG19Features(nn.Module):
    """VGG-19 up to relu4_1 on RGB images, returning relu1_1, relu2_1, relu3_1 and relu4_1.

    Args:
        encoder_weights: ``"none"`` (seeded random init, see :func:`init_like_torchvision`), ``"imagenet"`` or a
            path, with the rules of :func:`load_encoder_weights` (a missing file raises, never a silent random init).
        width: channel multiplier; pretrained weights need 1.0.
        frozen: no parameter takes gradients, and the module stays in eval mode.
        seed: seed of the random initialisation when not pretrained.
    """

    def __init__(self, encoder_weights: str | None = "none", width: float = 1.0, frozen: bool = True, seed: int = 0):
        super().__init__()
        self.norm = RGBNorm()
        self.features, _, self.pretrained = vgg_stack("vgg19", width, encoder_weights, upto=VGG19_UPTO, seed=seed)
        self.frozen = frozen
        # frozen: a fixed function that the configuration rebuilds identically (checkpoints leave its weights out)
        self.fixed_function = frozen
        if frozen:
            self.requires_grad_(False)
            self.eval()
        self.channels = [m.out_channels for i, m in enumerate(self.features)
                         if isinstance(m, nn.Conv2d) and i + 1 in VGG19_TAPS.values()]

    def train(self, mode: bool = True) -> "VGG19Features":
        # A frozen extractor is a fixed function: model.train() on a parent must not switch it back.
        return super().train(mode and not self.frozen)

    def forward(self, rgb: torch.Tensor) -> list[torch.Tensor]:
        """``rgb``: ``B×3×H×W`` in [0, 1] → ``[relu1_1, relu2_1, relu3_1, relu4_1]``."""
        x = self.norm(rgb)
        out, start = [], 0
        for stop in VGG19_TAPS.values():
            x = self.features[start : stop + 1](x)
            out.append(x)
            start = stop + 1
        return out


# ----------------------------------------------------------------------------------------------------- VGG-16 features
# LPIPS (Zhang et al. 2018) and the perceptual loss read a full-width VGG-16 at the last ReLU of every block. The
# loss/metric networks name their weights by *backbone*: "imagenet" (torchvision's checkpoint, the file the paper
# preset's encoder needs too) or "random" (a fixed, seeded Kaiming init, only when asked for by name).

VGG16_TAPS = {"relu1_2": 3, "relu2_2": 8, "relu3_3": 15, "relu4_3": 22, "relu5_3": 29}
BACKBONES = ("imagenet", "random")


def check_backbone(backbone: str) -> str:
    """Validate a backbone name (``imagenet`` or ``random``) and return it; ValueError otherwise."""
    if backbone not in BACKBONES:
        raise ValueError(f"backbone must be one of {', '.join(BACKBONES)}, not {backbone!r}")
    return backbone


class VGG16Taps(nn.Module):
    """A frozen, full-width VGG-16 conv stack returning the activations at the named taps.

    The input is already normalised (each user has its own convention: ImageNet mean/std, or LPIPS' scaling).

    Args:
        taps: names from ``VGG16_TAPS``, in network order; the stack stops after the last one.
        backbone: ``"imagenet"`` (torchvision's checkpoint from ``$TORCH_HOME/hub/checkpoints``, downloaded when
            online; missing → ``EncoderWeightsError`` naming the file) or ``"random"`` (seeded, never a fallback).
        seed: seed of the random initialisation.
    """

    def __init__(self, taps=tuple(VGG16_TAPS), backbone: str = "imagenet", seed: int = 0):
        super().__init__()
        check_backbone(backbone)
        unknown = [t for t in taps if t not in VGG16_TAPS]
        if unknown or not taps:
            raise ValueError(f"unknown VGG-16 taps {unknown}; available: {', '.join(VGG16_TAPS)}")
        self.stops = sorted(VGG16_TAPS[t] for t in taps)
        self.features, _, self.pretrained = vgg_stack("vgg16", 1.0, "imagenet" if backbone == "imagenet" else "none",
                                                      upto=self.stops[-1] + 1, seed=seed)
        self.backbone = backbone
        self.requires_grad_(False)
        self.eval()

    #: a fixed function that the configuration rebuilds identically (checkpoints leave its weights out)
    fixed_function = True

    def train(self, mode: bool = True) -> "VGG16Taps":
        return super().train(False)  # a fixed function: never switched to training mode by a parent

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``x``: normalised ``B×3×H×W`` → the activations at the taps, in order."""
        out, start = [], 0
        for stop in self.stops:
            x = self.features[start : stop + 1](x)
            out.append(x)
            start = stop + 1
        return out
