"""U-Net colorizers with a VGG encoder (Ballester et al. 2022): L in, ab (or ab-bin logits) out."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bench.data.abbins import ANNEAL_T, ABBins
from bench.data.colour import AB_SCALE

from .registry import register_model
from .vgg import ImageNetNorm, vgg_stack


def conv_block(c_in: int, c_out: int) -> nn.Sequential:
    """Two 3×3 conv + BatchNorm + ReLU: the decoder's unit."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class ColorHead(nn.Module):
    """1×1 conv to the prediction, and its decoding to ab.

    Args:
        c_in: input channels.
        head: ``"ab"`` (2 channels, in Lab units) or ``"bins"`` (one logit per in-gamut ab bin).
        temperature: annealed-mean temperature used to decode bin logits.
    """

    def __init__(self, c_in: int, head: str = "ab", temperature: float = ANNEAL_T):
        super().__init__()
        if head not in ("ab", "bins"):
            raise ValueError(f"head must be 'ab' or 'bins', not {head!r}")
        self.head = head
        self.temperature = temperature
        self.bins = ABBins() if head == "bins" else None
        self.proj = nn.Conv2d(c_in, 2 if head == "ab" else self.bins.n_bins, 1)
        # Neutral start: an untrained head predicts ab = 0, the greyscale baseline, instead of random colours that
        # training must first unlearn. Zero weights; the bins head's bias is the logits whose annealed mean is
        # grey (equal logits would decode to an orange cast, ab ≈ (15.6, 6.0)). The gradient still reaches the
        # projection at once and the layers below from the second step on. Quick preset, MSE, bundled Kodak24:
        # with PyTorch's default init the network was 1.4 dB below grey after 150 steps (issue 12).
        nn.init.zeros_(self.proj.weight)
        with torch.no_grad():
            self.proj.bias.copy_(torch.zeros(2) if head == "ab" else self.bins.neutral_logits(temperature))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale(self.proj(x))

    def scale(self, out: torch.Tensor) -> torch.Tensor:
        """The projection's output → the head's raw output (Lab units for the ab head, logits unchanged)."""
        # The conv learns normalised ab; scaling here keeps the model's output in Lab units for every loss.
        return out * AB_SCALE if self.head == "ab" else out

    def to_ab(self, out: torch.Tensor) -> torch.Tensor:
        return out.float() if self.head == "ab" else self.bins.decode(out, self.temperature)


class UNetVGG(nn.Module):
    """VGG conv stack as encoder, a U-Net decoder that concatenates the skip of every block, a colour head.

    Args:
        arch: ``"vgg16"`` or ``"vgg19"``.
        head: ``"ab"`` or ``"bins"`` (chosen from the loss by the trainer).
        width: channel multiplier; < 1 gives small variants for CPUs (no pretrained weights then).
        encoder_weights: ``"none"``, ``"imagenet"`` or a path (see :func:`models.vgg.load_encoder_weights`).
        freeze_encoder: keep the encoder's weights fixed during training.
    """

    needs_reference = False
    task = "colorization"

    def __init__(self, arch="vgg16", head="ab", width=1.0, encoder_weights="none", freeze_encoder=False):
        super().__init__()
        self.norm = ImageNetNorm()
        # a random encoder starts as torchvision's VGG, from the training seed: PyTorch's default conv init would
        # shrink the signal ~6× in energy per layer and leave the deep blocks near zero (results/study-preset-cpu.md)
        self.features, block_ch, self.encoder_pretrained = vgg_stack(arch, width, encoder_weights)
        if freeze_encoder:
            self.features.requires_grad_(False)
        # Taps: the ReLU output just before each pool; the last block is the bottleneck (its pool is dropped).
        pools = [i for i, m in enumerate(self.features) if isinstance(m, nn.MaxPool2d)]
        self.taps = pools
        self.decoder = nn.ModuleList()
        c = block_ch[-1]
        for skip_c in reversed(block_ch[:-1]):
            self.decoder.append(conv_block(c + skip_c, skip_c))
            c = skip_c
        self.color = ColorHead(c, head)
        self.head = head

    def encode(self, L: torch.Tensor) -> list[torch.Tensor]:
        """Run the encoder and return the features of every block, finest first."""
        x = self.norm(L)
        feats = []
        start = 0
        for p in self.taps:
            x = self.features[start:p](x)
            feats.append(x)
            if p != self.taps[-1]:
                x = self.features[p](x)
            start = p + 1
        return feats

    def decode(self, feats: list[torch.Tensor]) -> torch.Tensor:
        """Encoder features → the head's raw output."""
        return self.color(self.decode_features(feats))

    def decode_features(self, feats: list[torch.Tensor]) -> torch.Tensor:
        """Encoder features → the decoder's last feature map (the colour head's input)."""
        x = feats[-1]
        for block, skip in zip(self.decoder, reversed(feats[:-1])):
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip], dim=1))
        return x

    def forward(self, L: torch.Tensor, ref: torch.Tensor | None = None) -> torch.Tensor:
        """``L``: ``B×1×H×W`` lightness in [0, 100] (H, W multiples of 16) → the head's raw output."""
        return self.decode(self.encode(L))

    def to_ab(self, out: torch.Tensor) -> torch.Tensor:
        """Raw output → ab in Lab units (annealed mean for the bins head)."""
        return self.color.to_ab(out)


@register_model("unet_vgg16")
def unet_vgg16(head="ab", width=1.0, encoder_weights="none", freeze_encoder=False) -> UNetVGG:
    """U-Net with a VGG-16 encoder (the paper's model)."""
    return UNetVGG("vgg16", head, width, encoder_weights, freeze_encoder)


@register_model("unet_vgg19")
def unet_vgg19(head="ab", width=1.0, encoder_weights="none", freeze_encoder=False) -> UNetVGG:
    """U-Net with a VGG-19 encoder."""
    return UNetVGG("vgg19", head, width, encoder_weights, freeze_encoder)
