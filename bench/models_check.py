"""Checks of a configuration that need the model code, made before any training starts."""
from __future__ import annotations

from .config import CellConfig


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
            losses.build(spec, encoder_weights=cfg.encoder_weights, vgg_width=cfg.width)
        except EncoderWeightsError as err:
            raise ValueError(str(err)) from None
