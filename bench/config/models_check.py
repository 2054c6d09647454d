"""Checks of a configuration that need the model code, made before any training starts."""
from __future__ import annotations

import os

from bench.config.cell import CellConfig


def check_encoder_weights(cfg: CellConfig, model_names: list[str], loss_specs: list[str] = ()) -> None:
    """Fail early (ValueError) if pretrained weights are asked for but cannot be loaded: the models' encoders, and
    the VGG inside losses that have one (``adain``, ``adain_style``)."""
    if cfg.encoder_weights in (None, "", "none"):
        return
    import models
    from models.vgg import EncoderWeightsError

    for name in model_names:
        try:
            models.build(name, head="ab", width=cfg.width, encoder_weights=cfg.encoder_weights, **cfg.model_params)
        except EncoderWeightsError as err:
            raise ValueError(str(err)) from None
    import losses

    for spec in dict.fromkeys(loss_specs):
        try:
            losses.build(spec, context={"encoder_weights": cfg.encoder_weights, "vgg_width": cfg.width})
        except EncoderWeightsError as err:
            raise ValueError(str(err)) from None


def check_lpips_weights() -> None:
    """Fail early (ValueError of one line naming the file) if the LPIPS linear weights shipped with colorbench are
    missing, changed (their SHA-256 is not the one of ``SHA256SUMS``) or unreadable: every run scores LPIPS."""
    from models.lpips import read_lin_weights
    from models.vgg import EncoderWeightsError

    try:
        read_lin_weights()
    except EncoderWeightsError as err:
        raise ValueError(str(err)) from None


def check_backbones(cfgs: list[CellConfig]) -> None:
    """Fail early (ValueError naming the file and TORCH_HOME) if an ``lpips``/``perceptual`` loss asks for the
    ImageNet VGG-16 (its ``loss_params.backbone``, else the configuration's ``lpips_backbone``) and the checkpoint
    cannot be had, or if the shipped LPIPS linear weights are damaged (``check_lpips_weights``). (The ``lpips``
    *metric* does not fail for a missing checkpoint: its rows say ``lpips_backbone=missing``.)

    Args:
        cfgs: the configurations of every job.
    """
    import inspect

    import losses
    from models.vgg import REFETCH, EncoderWeightsError, VGG16Taps, imagenet_checkpoint_path, read_weights

    def uses_backbone(spec: str) -> bool:
        return any("backbone" in inspect.signature(losses.get_class(name).__init__).parameters
                   for _, name in losses.parse_spec(spec))

    check_lpips_weights()
    needy = [c.loss for c in cfgs if uses_backbone(c.loss)
             and c.loss_params.get("backbone", c.lpips_backbone) == "imagenet"]
    cached = imagenet_checkpoint_path("vgg16")
    if (needy or any(c.lpips_backbone == "imagenet" for c in cfgs)) and cached.is_file():
        try:  # a damaged file is refused, also for the lpips metric (which would record a missing one as such)
            read_weights(cached, REFETCH, mmap=True)
        except EncoderWeightsError as err:
            raise ValueError(str(err)) from None
    if not needy:
        return
    try:
        VGG16Taps(("relu1_2",), "imagenet")  # reads the checkpoint (or downloads it when online)
    except EncoderWeightsError as err:
        where = f"{imagenet_checkpoint_path('vgg16')} (TORCH_HOME={os.environ.get('TORCH_HOME', '~/.cache/torch')})"
        raise ValueError(f"loss {needy[0]} needs torchvision's ImageNet VGG-16, {where}, which cannot be had "
                         f"({str(err).split(': ')[0]}); copy the file there, or ask for a random VGG-16 with "
                         f"--set lpips_backbone=random (flagged in every row)") from None
