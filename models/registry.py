"""The model registry: ``@register_model("name")`` on a factory function, ``models.build(name, **params)``."""
from __future__ import annotations

import inspect
from typing import Callable

from torch import nn

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str) -> Callable:
    """Function decorator that makes a model factory buildable as ``models.build(name, **params)``.

    Args:
        name: the name used in grids and on the command line.
    """

    def wrap(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _MODELS:
            raise ValueError(f"model {name!r} is registered twice")
        _MODELS[name] = fn
        return fn

    return wrap


def available() -> list[str]:
    """Names of all registered models, sorted."""
    return sorted(_MODELS)


def get_factory(name: str) -> Callable[..., nn.Module]:
    """The factory registered under ``name``; a ValueError listing the valid names otherwise."""
    try:
        return _MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(available())}") from None


def build(name: str, **params) -> nn.Module:
    """Build a registered model, passing it the keyword arguments its factory accepts.

    Args:
        name: a registered model name.
        params: factory arguments (``head``, ``width``, ``encoder_weights``, ...); unknown ones are ignored so
            one configuration can serve several models.
    """
    fn = get_factory(name)
    sig = inspect.signature(fn).parameters
    takes_all = any(p.kind == p.VAR_KEYWORD for p in sig.values())
    return fn(**{k: v for k, v in params.items() if takes_all or k in sig})
