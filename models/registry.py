"""The model registry: ``@register_model("name")`` on a factory function, ``models.build(name, **params)``."""
from __future__ import annotations

import inspect
from typing import Callable

from torch import nn

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str, shown: tuple[str, ...] = ()) -> Callable:
    """Function decorator that makes a model factory buildable as ``models.build(name, **params)``.

    Args:
        name: the name used in grids and on the command line.
        shown: registry metadata: factory parameters recorded as columns of ``runs.csv`` and shown by the
            leaderboard (blank for runs whose ``model_params`` do not set them); stored as the factory's ``shown``.
    """

    def wrap(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _MODELS:
            raise ValueError(f"model {name!r} is registered twice")
        sig = inspect.signature(fn).parameters
        if not any(p.kind == p.VAR_KEYWORD for p in sig.values()):
            missing = [k for k in shown if k not in sig]
            if missing:
                raise ValueError(f"model {name!r} shows {', '.join(missing)}, which its factory does not take")
        fn.shown = tuple(shown)
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


def shown() -> list[str]:
    """The parameters that some registered model shows (``register_model(..., shown=...)``): by model name, then in
    each model's order."""
    return list(dict.fromkeys(k for name in available() for k in getattr(get_factory(name), "shown", ())))


def parameters(name: str) -> list[str] | None:
    """The keyword arguments the factory of model ``name`` takes (None: any, it has ``**kwargs``)."""
    sig = inspect.signature(get_factory(name)).parameters
    if any(p.kind == p.VAR_KEYWORD for p in sig.values()):
        return None
    return [k for k, p in sig.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def check_params(name: str, params) -> None:
    """Raise a one-line ValueError if model ``name`` does not take every one of ``params`` (names).

    A parameter the factory does not know would otherwise be dropped and another experiment run than asked for.
    """
    valid = parameters(name)
    unknown = [k for k in params if valid is not None and k not in valid]
    if unknown:
        raise ValueError(f"model {name} does not take parameter(s) {', '.join(unknown)}; it takes: "
                         f"{', '.join(valid) or 'none'}")


def build(name: str, **params) -> nn.Module:
    """Build a registered model.

    Args:
        name: a registered model name.
        params: factory arguments (``head``, ``width``, ``encoder_weights``, ...).

    Raises:
        ValueError: unknown model, or a parameter its factory does not take (naming the valid ones).
    """
    check_params(name, params)
    return get_factory(name)(**params)
