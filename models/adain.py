"""Adaptive instance normalisation (Huang & Belongie 2017): the AdaIN op and the arbitrary style-transfer network.

AdaIN(x, y) = σ(y) · (x − μ(x)) / σ(x) + μ(y), per sample and channel, over the spatial axes: the content features
keep their spatial layout but take on the style features' first two moments. The network is a frozen VGG-19
encoder (up to relu4_1), AdaIN, and a decoder that mirrors the encoder; only the decoder trains.
"""
from __future__ import annotations

import torch
from torch import nn

from .vgg import VGG19Features

EPS = 1e-5


def channel_stats(x: torch.Tensor, eps: float = EPS) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample, per-channel mean and standard deviation over the spatial axes, each ``B×C×1×1``.

    The variance is the biased (population) one, so that AdaIN's output has exactly the style's σ when measured the
    same way; ``eps`` keeps σ and its gradient finite on constant (or 1×1) feature maps.

    Args:
        x: ``B×C×H×W`` features.
        eps: added to the variance before the square root.
    """
    x = x.float()  # moments in fp32 even under bf16 autocast: variances of large activations overflow bf16 precision
    mean = x.mean(dim=(2, 3), keepdim=True)
    var = x.var(dim=(2, 3), keepdim=True, unbiased=False)
    return mean, torch.sqrt(var + eps)


def adain(content: torch.Tensor, style: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """Re-normalise ``content`` (``B×C×H×W``) to the channel-wise mean and std of ``style`` (``B×C×H'×W'``).

    Args:
        content: the features whose layout is kept.
        style: the features whose statistics are imposed (any spatial size; same batch and channels).
        eps: see :func:`channel_stats`.
    """
    if content.shape[:2] != style.shape[:2]:
        raise ValueError(f"AdaIN needs the same batch and channels, got {tuple(content.shape)} and {tuple(style.shape)}")
    c_mean, c_std = channel_stats(content, eps)
    s_mean, s_std = channel_stats(style, eps)
    return ((content.float() - c_mean) / c_std * s_std + s_mean).to(content.dtype)


def _conv(c_in: int, c_out: int, relu: bool = True) -> list[nn.Module]:
    # Reflection padding instead of zeros: zero borders show up as dark frames in stylised images.
    layers = [nn.ReflectionPad2d(1), nn.Conv2d(c_in, c_out, 3)]
    return layers + [nn.ReLU(inplace=True)] if relu else layers


def make_decoder(width: float = 1.0) -> nn.Sequential:
    """The decoder that mirrors VGG-19 up to relu4_1: relu4_1 features (1/8 resolution) → RGB.

    Each pooling of the encoder becomes a nearest-neighbour ×2 upsampling (no transposed convs: they leave
    checkerboard artefacts), each conv a reflection-padded 3×3 conv; no normalisation layers, as in the paper.

    Args:
        width: channel multiplier, the same as the encoder's.
    """

    def c(v: int) -> int:  # the encoder's rounding (models.vgg.make_features), so the shapes meet
        return max(4, int(round(v * width)))

    up = lambda: nn.Upsample(scale_factor=2, mode="nearest")  # noqa: E731
    layers = _conv(c(512), c(256)) + [up()]
    layers += _conv(c(256), c(256)) + _conv(c(256), c(256)) + _conv(c(256), c(256)) + _conv(c(256), c(128)) + [up()]
    layers += _conv(c(128), c(128)) + _conv(c(128), c(64)) + [up()]
    layers += _conv(c(64), c(64)) + _conv(c(64), 3, relu=False)
    return nn.Sequential(*layers)


class AdaINStyleTransfer(nn.Module):
    """Arbitrary style transfer: frozen VGG-19 encoder → AdaIN → trainable mirrored decoder.

    This is not a colorizer: it maps a content RGB image and a style RGB image to a stylised RGB image, and is
    trained and evaluated by ``python -m bench.styletransfer``.

    Args:
        width: channel multiplier of encoder and decoder (pretrained weights need 1.0).
        encoder_weights: ``"none"``, ``"imagenet"`` or a path (see :class:`models.vgg.VGG19Features`).
    """

    task = "style_transfer"
    needs_reference = True  # the style image

    def __init__(self, width: float = 1.0, encoder_weights: str | None = "none"):
        super().__init__()
        self.encoder = VGG19Features(encoder_weights, width, frozen=True)
        self.encoder_pretrained = self.encoder.pretrained
        self.decoder = make_decoder(width)

    def encode(self, rgb: torch.Tensor) -> list[torch.Tensor]:
        """relu1_1 … relu4_1 of an RGB batch in [0, 1]."""
        return self.encoder(rgb)

    def stylise(self, content: torch.Tensor, style: torch.Tensor, alpha: float = 1.0):
        """Run the whole pipeline and keep what the loss needs.

        Args:
            content: ``B×3×H×W`` RGB in [0, 1], H and W multiples of 8.
            style: ``B×3×H'×W'`` RGB in [0, 1].
            alpha: 0 reproduces the content features, 1 applies the style fully; values between blend the two.

        Returns:
            (decoded image ``B×3×H×W``, unclamped; the AdaIN target t; the style's features at the four taps).
        """
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        if content.shape[-1] % 8 or content.shape[-2] % 8:
            raise ValueError(f"content height and width must be multiples of 8, got {tuple(content.shape[-2:])}")
        with torch.no_grad():  # the encoder is frozen: nothing upstream of t needs a graph
            fc = self.encode(content)[-1]
            fs = self.encode(style)
            t = adain(fc, fs[-1])
            t = alpha * t + (1 - alpha) * fc
        return self.decoder(t), t, fs

    def forward(self, content: torch.Tensor, style: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
        """Stylised RGB (unclamped; clamp to [0, 1] for display)."""
        return self.stylise(content, style, alpha)[0]

