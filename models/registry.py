"""The model registry: ``@register_model("name")`` on a factory function, ``models.build(name, **params)``."""
from __future__ import annotations

import inspect
import math
from typing import Callable

from torch import nn

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str, shown: tuple[str, ...] = (), check: Callable | None = None) -> Callable:
    """Function decorator that makes a model factory buildable as ``models.build(name, **params)``.

    Args:
        name: the name used in grids and on the command line.
        shown: registry metadata: factory parameters recorded as columns of ``runs.csv`` and shown by the
            leaderboard (blank for runs whose ``model_params`` do not set them); stored as the factory's ``shown``.
        check: registry metadata: called with the ``model_params`` of a run before anything is built (a one-line
            ``ValueError`` for a value the model refuses); stored as the factory's ``check_args``.
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
        fn.check_args = check
        _MODELS[name] = fn
        return fn

    return wrap


def _load_plugins() -> None:
    """The ``colorbench.models`` entry points, loaded the first time the registry is listed or looked up."""
    from bench.core.plugins import load_group

    load_group("colorbench.models")


def available() -> list[str]:
    """Names of all registered models (plugins' included), sorted."""
    _load_plugins()
    return sorted(_MODELS)


def get_factory(name: str) -> Callable[..., nn.Module]:
    """The factory registered under ``name``; a ValueError listing the valid names otherwise."""
    if name not in _MODELS:
        _load_plugins()
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


def check_kinds(what: str, fn: Callable, given: dict) -> None:
    """Raise a one-line ValueError for a keyword of ``fn`` given a value of another kind than its default.

    Args:
        what: how the message names the parameters (``loss l1: loss_params``).
        fn: the function (or ``__init__``) whose defaults say the kinds: a flag takes true/false, a whole number a
            whole number, a float any finite number, text text, a tuple or list a list; other defaults, None
            included, take anything.
        given: the values, by name.
    """
    sig = inspect.signature(fn).parameters
    for k, v in given.items():
        d = sig[k].default if k in sig else None
        number = isinstance(v, (int, float)) and not isinstance(v, bool)
        for kind, ok, want in ((bool, isinstance(v, bool), "true or false"),
                               (int, number and isinstance(v, int), "a whole number"),
                               (float, number and math.isfinite(v), "a finite number"), (str, isinstance(v, str), "text"),
                               ((tuple, list), isinstance(v, (tuple, list)), "a list")):
            if isinstance(d, kind):
                if not ok:
                    raise ValueError(f"{what}.{k} must be {want}, got {v!r:.60}")
                break


def check_values(name: str, params: dict) -> None:
    """Raise a one-line ValueError for a ``model_params`` value that model ``name`` would refuse when built (of
    another kind than the factory's default, or refused by its ``check``); nothing is built.

    Args:
        name: a registered model.
        params: the run's ``model_params`` (the configuration's own ``head``, ``width`` and ``encoder_weights``
            are not among them).
    """
    fn = get_factory(name)
    own = [k for k in ("head", "width", "encoder_weights") if k in params]
    if own:
        raise ValueError(f"model_params.{own[0]} is set by the configuration itself, not in model_params")
    check_kinds(f"model {name}: model_params", fn, params)
    if getattr(fn, "check_args", None) is not None:
        try:
            fn.check_args(**params)
        except (ValueError, TypeError) as err:
            raise ValueError(f"model {name}: model_params.{err}") from None


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
