"""Colorization from a colour reference: the U-Net's L features re-normalised (AdaIN) with a reference's statistics.

The U-Net encoder reads L; a second VGG stack reads the reference RGB. At the bottleneck, AdaIN gives the L
features the reference's per-channel mean and std, which is where a reference's global colour can enter. The
skips are a parameter: ``concat`` (the U-Net's plain skips), ``adain`` (each skip re-normalised with the reference's
features at the same level) or ``none`` (the decoder sees only the bottleneck, so all colour must come through it).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .adain import adain
from .registry import register_model
from .unet_vgg import UNetVGG, conv_block
from .vgg import CFGS, RGBNorm, vgg_stack

SKIPS = ("concat", "adain", "none")
TRAIN_REFERENCES = ("same", "other")


class AdaINUNet(UNetVGG):
    """U-Net colorizer with a reference encoder and AdaIN at the bottleneck (and optionally on the skips).

    Args:
        arch: ``"vgg16"`` or ``"vgg19"`` (both encoders).
        head: ``"ab"`` or ``"bins"``.
        width: channel multiplier of both encoders and the decoder.
        encoder_weights: ``"none"``, ``"imagenet"`` or a path, for both encoders (see
            :func:`models.vgg.load_encoder_weights`).
        freeze_encoder: keep both encoders' weights fixed.
        skips: ``"concat"``, ``"adain"`` or ``"none"``.
        train_reference: the reference during training: ``"same"`` (another crop/flip of the same photo: its colours
            leak, its pixel positions do not) or ``"other"`` (a view of another photo). Kept as the model's
            ``reference_view``, which the trainer (``bench.training.loop``) reads.
    """

    needs_reference = True
    task = "colorization"

    def __init__(self, arch="vgg16", head="ab", width=1.0, encoder_weights="none", freeze_encoder=False,
                 skips="concat", train_reference="same"):
        check_args(skips=skips, train_reference=train_reference)
        super().__init__(arch, head, width, encoder_weights, freeze_encoder)
        self.skips = skips
        self.reference_view = train_reference  # what the trainer reads (models/__init__.py)
        self.ref_norm = RGBNorm()
        self.ref_features, block_ch, ref_pretrained = vgg_stack(arch, width, encoder_weights)  # as the L encoder
        self.encoder_pretrained = self.encoder_pretrained and ref_pretrained
        if freeze_encoder:
            self.ref_features.requires_grad_(False)
        if skips == "none":  # the decoder blocks lose their skip inputs, so they take fewer channels
            self.decoder = nn.ModuleList()
            c = block_ch[-1]
            for skip_c in reversed(block_ch[:-1]):
                self.decoder.append(conv_block(c, skip_c))
                c = skip_c

    def encode_reference(self, ref: torch.Tensor) -> list[torch.Tensor]:
        """Features of the reference at every block (finest first), as :meth:`encode` gives for L."""
        x = self.ref_norm(ref)
        feats, start = [], 0
        for p in self.taps:
            x = self.ref_features[start:p](x)
            feats.append(x)
            if p != self.taps[-1]:
                x = self.ref_features[p](x)
            start = p + 1
        return feats

    def forward(self, L: torch.Tensor, ref: torch.Tensor | None = None) -> torch.Tensor:
        """``L``: ``B×1×H×W`` in [0, 100]; ``ref``: ``B×3×H'×W'`` RGB in [0, 1] (any size: only its statistics are
        used) → the head's raw output."""
        if ref is None:
            raise ValueError("adain_unet needs a colour reference: call model(L, ref)")
        if ref.shape[0] != L.shape[0]:
            raise ValueError(f"one reference per image: L has batch {L.shape[0]}, ref has {ref.shape[0]}")
        feats = self.encode(L)
        refs = self.encode_reference(ref)
        x = adain(feats[-1], refs[-1])
        for block, skip, rskip in zip(self.decoder, reversed(feats[:-1]), reversed(refs[:-1])):
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            if self.skips == "concat":
                x = torch.cat([x, skip], dim=1)
            elif self.skips == "adain":
                x = torch.cat([x, adain(skip, rskip)], dim=1)
            x = block(x)
        return self.color(x)


def check_args(skips="concat", train_reference="same", arch="vgg16", **_) -> None:
    """Refuse (one-line ``ValueError``) a ``skips``, ``train_reference`` or ``arch`` that :class:`AdaINUNet` does
    not know.

    Args:
        skips, train_reference, arch: as for :class:`AdaINUNet`; other parameters are ignored.
    """
    if arch not in CFGS:
        raise ValueError(f"arch must be one of {', '.join(CFGS)}, not {arch!r}")
    if skips not in SKIPS:
        raise ValueError(f"skips must be one of {', '.join(SKIPS)}, not {skips!r}")
    if train_reference not in TRAIN_REFERENCES:
        raise ValueError(f"train_reference must be one of {', '.join(TRAIN_REFERENCES)}, not {train_reference!r}")


@register_model("adain_unet", shown=("skips",), check=check_args)
def adain_unet(head="ab", width=1.0, encoder_weights="none", freeze_encoder=False, skips="concat",
               train_reference="same", arch="vgg16") -> AdaINUNet:
    """Reference-based colorizer: U-Net on L, VGG on the reference, AdaIN at the bottleneck (``skips`` selectable)."""
    return AdaINUNet(arch, head, width, encoder_weights, freeze_encoder, skips, train_reference)
