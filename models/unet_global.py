"""U-Net colorizers with a global branch (after Iizuka et al. 2016): pooled features of the whole image steer the
decoder, so that a per-image colour cast (a blue sky, green foliage, a warm interior) can be predicted once per
image instead of pixel by pixel from local context.

The branch pools the bottleneck (average and max over space), passes it through a small MLP and produces

- a FiLM modulation (scale ``1 + γ`` and shift ``β`` per channel) of the decoder's last feature map, and
- a per-image bias of the colour head's output (2 values for the ab head, one logit per bin for the bins head).

Both start at zero, so an untrained network is the plain U-Net (and predicts grey, as every colorizer here does).
"""
from __future__ import annotations

import torch
from torch import nn

from .registry import register_model
from .unet_vgg import UNetVGG


class GlobalBranch(nn.Module):
    """Pooled bottleneck → MLP → (γ, β) for ``film_ch`` channels and a bias of ``out_ch`` head outputs.

    Args:
        c_in: channels of the bottleneck.
        film_ch: channels of the decoder map that is modulated.
        out_ch: outputs of the colour head (2, or the number of ab bins).
        hidden: width of the MLP.
    """

    def __init__(self, c_in: int, film_ch: int, out_ch: int, hidden: int):
        super().__init__()
        self.film_ch = film_ch
        self.mlp = nn.Sequential(nn.Linear(2 * c_in, hidden), nn.ReLU(inplace=True),
                                 nn.Linear(hidden, hidden), nn.ReLU(inplace=True))
        self.film = nn.Linear(hidden, 2 * film_ch)
        self.bias = nn.Linear(hidden, out_ch)
        for lin in (self.film, self.bias):  # zero start: the branch changes nothing until it has learned something
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)

    def forward(self, bottleneck: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``B×C×h×w`` → (γ ``B×F×1×1``, β ``B×F×1×1``, head bias ``B×O×1×1``)."""
        pooled = torch.cat([bottleneck.mean((2, 3)), bottleneck.amax((2, 3))], dim=1)
        z = self.mlp(pooled)
        gamma, beta = self.film(z).chunk(2, dim=1)
        return gamma[..., None, None], beta[..., None, None], self.bias(z)[..., None, None]


class UNetGlobal(UNetVGG):
    """:class:`models.unet_vgg.UNetVGG` plus a :class:`GlobalBranch` on its bottleneck.

    Args:
        arch: ``"vgg16"`` or ``"vgg19"``.
        head: ``"ab"`` or ``"bins"``.
        width: channel multiplier.
        encoder_weights: ``"none"``, ``"imagenet"`` or a path.
        freeze_encoder: keep the encoder's weights fixed.
        global_hidden: width of the global MLP (0: twice the bottleneck's channels).
    """

    def __init__(self, arch="vgg16", head="ab", width=1.0, encoder_weights="none", freeze_encoder=False,
                 global_hidden=0):
        super().__init__(arch, head, width, encoder_weights, freeze_encoder)
        c_bottleneck = self.decoder[0][0].in_channels - self.decoder[0][-3].out_channels
        c_last = self.color.proj.in_channels
        self.global_branch = GlobalBranch(c_bottleneck, c_last, self.color.proj.out_channels,
                                          int(global_hidden) or 2 * c_bottleneck)

    def forward(self, L: torch.Tensor, ref: torch.Tensor | None = None) -> torch.Tensor:
        """``L``: ``B×1×H×W`` lightness in [0, 100] (H, W multiples of 16) → the head's raw output."""
        feats = self.encode(L)
        gamma, beta, bias = self.global_branch(feats[-1])
        x = self.decode_features(feats)
        return self.color.scale(self.color.proj(x * (1 + gamma) + beta) + bias)


def _check(global_hidden=0, freeze_encoder=False):
    if not 0 <= int(global_hidden) <= 4096:
        raise ValueError(f"global_hidden must be between 0 and 4096, got {global_hidden}")


@register_model("unet_vgg16_global", shown=("global_hidden",), check=_check)
def unet_vgg16_global(head="ab", width=1.0, encoder_weights="none", freeze_encoder=False, global_hidden=0) -> UNetGlobal:
    """U-Net with a VGG-16 encoder and a global branch (per-image FiLM of the decoder and colour bias)."""
    return UNetGlobal("vgg16", head, width, encoder_weights, freeze_encoder, global_hidden)
