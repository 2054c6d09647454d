"""The loss registry: register a loss class by name, build it (or a weighted sum of several) from a spec string."""
from __future__ import annotations

import inspect
import math
import re
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from models.registry import check_kinds

_LOSSES: dict[str, type] = {}


@dataclass(frozen=True)
class Tunable:
    """A loss parameter that ``bench.tune`` searches (declared in the loss class's ``tunable`` dict).

    Args:
        low, high: the default search range (``bench.tune --range NAME=LOW,HIGH`` changes it).
        log: search on a log scale.
        positive: the parameter must be a positive number wherever it is given (``CellConfig.validate``).
        symbol: short name in tuning logs (e.g. ``"λ"``); the parameter's name when empty.
        label: words for what is tuned (e.g. ``"style weight λ"``); the parameter's name when empty.
    """

    low: float
    high: float
    log: bool = True
    positive: bool = True
    symbol: str = ""
    label: str = ""

    def __post_init__(self):
        if not (math.isfinite(self.low) and math.isfinite(self.high) and self.low < self.high):
            raise ValueError(f"a tunable range needs finite low < high, got {self.low}, {self.high}")
        if (self.log or self.positive) and not self.low > 0:
            raise ValueError(f"a log-scale or positive tunable range needs low > 0, got {self.low}")


def register_loss(name: str) -> Callable[[type], type]:
    """Class decorator that makes a loss buildable as ``losses.build(name)``.

    Besides ``head`` (``"ab"`` or ``"bins"``), a loss class may declare metadata that the harness reads instead of
    naming any loss's parameters itself (each name must be a parameter of ``__init__``):

    - ``tunable``: ``{parameter: Tunable(...)}``, what ``bench.tune`` searches besides ``lr``;
    - ``shown``: parameters recorded as columns of ``runs.csv`` and shown by the leaderboard (blank for runs whose
      ``loss_params`` do not set them);
    - ``prior_bins(params)``: a classmethod returning the ``bench.data.abbins.ABBins`` over which the loss, with these
      parameters, needs the training images' colour prior (passed as its ``prior`` argument), or None.

    Args:
        name: the name used in specs, grids and the CLI (lower case, no ``+`` or ``*``).
    """

    def wrap(cls: type) -> type:
        if name in _LOSSES:
            raise ValueError(f"loss {name!r} is registered twice")
        if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
            raise ValueError(f"loss name {name!r} must be lower-case letters, digits and underscores")
        _check_metadata(name, cls)
        cls.name = name
        _LOSSES[name] = cls
        return cls

    return wrap


def _check_metadata(name: str, cls: type) -> None:
    sig = inspect.signature(cls.__init__).parameters
    any_kwarg = any(p.kind == p.VAR_KEYWORD for p in sig.values())
    tunable = getattr(cls, "tunable", {})
    if not all(isinstance(t, Tunable) for t in tunable.values()):
        raise ValueError(f"loss {name!r}: tunable must map parameter names to Tunable(...)")
    for key in [*tunable, *getattr(cls, "shown", ())]:
        if key == "lr" or not (any_kwarg or key in sig):
            raise ValueError(f"loss {name!r} declares {key!r} tunable or shown, but its __init__ does not take it")
    if "prior_bins" in vars(cls) and not isinstance(vars(cls)["prior_bins"], classmethod):
        raise ValueError(f"loss {name!r}: prior_bins must be a classmethod (it is asked before the loss is built)")


def _load_plugins() -> None:
    """The ``colorbench.losses`` entry points, loaded the first time the registry is listed or looked up."""
    from bench.core.plugins import load_group

    load_group("colorbench.losses")


def available() -> list[str]:
    """Names of all registered losses (plugins' included), sorted."""
    _load_plugins()
    return sorted(_LOSSES)


def get_class(name: str) -> type:
    """The class registered under ``name``; a ValueError listing the valid names otherwise."""
    if name not in _LOSSES:
        _load_plugins()
    try:
        return _LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; available: {', '.join(available())}") from None


_TERM = re.compile(r"^\s*(?:(?P<w>[0-9]*\.?[0-9]+(?:e-?[0-9]+)?)\s*\*\s*)?(?P<name>[a-z][a-z0-9_]*)\s*$")


def parse_spec(spec: str) -> list[tuple[float, str]]:
    """Split a spec such as ``"mse+10*adain_style"`` into ``[(1.0, "mse"), (10.0, "adain_style")]``.

    Args:
        spec: one loss name, or ``+``-separated terms each optionally prefixed by ``weight*``.
    """
    terms = []
    for part in spec.split("+"):
        m = _TERM.match(part)
        if not m:
            raise ValueError(f"cannot parse loss spec {spec!r} (term {part!r}); expected e.g. 'l1' or 'mse+10*adain_style'")
        weight = float(m.group("w")) if m.group("w") else 1.0
        if not weight > 0:
            raise ValueError(f"loss weight must be positive in {spec!r}")
        get_class(m.group("name"))  # validates the name
        terms.append((weight, m.group("name")))
    return terms


class CompositeLoss(nn.Module):
    """A weighted sum of registered losses that share one prediction head."""

    name = "composite"

    def __init__(self, terms: list[tuple[float, nn.Module]], spec: str):
        super().__init__()
        heads = {t.head for _, t in terms}
        if len(heads) != 1:
            raise ValueError(f"loss spec {spec!r} mixes prediction heads {sorted(heads)}; terms must share one head")
        self.head = heads.pop()
        self.weights = [w for w, _ in terms]
        self.terms = nn.ModuleList([t for _, t in terms])
        self.spec = spec
        self.signed = any(getattr(t, "signed", False) for t in self.terms)

    def forward(self, pred: torch.Tensor, target_ab: torch.Tensor, **ctx) -> torch.Tensor:
        return sum(w * t(pred, target_ab, **ctx) for w, t in zip(self.weights, self.terms))

    def extra_step(self, pred: torch.Tensor, target_ab: torch.Tensor, **ctx) -> None:
        """The training step's hook (see ``bench.training.loop.TrainStep``): run it for every term that has one."""
        for t in self.terms:
            if hasattr(t, "extra_step"):
                t.extra_step(pred, target_ab, **ctx)


def parameters(name: str) -> list[str] | None:
    """The keyword arguments the loss class ``name`` takes (None: any, it has ``**kwargs``)."""
    sig = inspect.signature(get_class(name).__init__).parameters
    if any(p.kind == p.VAR_KEYWORD for p in sig.values()):
        return None
    return [k for k, p in sig.items() if k != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def _takes(name: str, key: str) -> bool:
    valid = parameters(name)
    return valid is None or key in valid


def takes(spec: str, key: str) -> bool:
    """Whether some term of the loss ``spec`` takes the parameter ``key``."""
    return any(_takes(name, key) for _, name in parse_spec(spec))


def check_params(spec: str, params) -> None:
    """Raise a one-line ValueError if a parameter (name) is taken by no term of ``spec``.

    A parameter no term knows would otherwise be dropped and another experiment run than asked for.
    """
    names = [name for _, name in parse_spec(spec)]
    unknown = [k for k in params if not takes(spec, k)]
    if unknown:
        valid = sorted({k for n in names for k in (parameters(n) or [])})
        raise ValueError(f"loss {spec} does not take parameter(s) {', '.join(unknown)}; it takes: "
                         f"{', '.join(valid) or 'none'}")


def check_values(spec: str, params: dict) -> None:
    """Raise a one-line ValueError for a parameter value that a term of ``spec`` would refuse when built; nothing is
    built.

    Args:
        spec: a loss spec.
        params: the run's ``loss_params``; each term is checked with those it takes: their kinds against the
            defaults of its ``__init__`` (``models.registry.check_kinds``), then by its ``check_args`` classmethod
            when it has one.
    """
    for _, name in parse_spec(spec):
        cls = get_class(name)
        given = {k: v for k, v in params.items() if _takes(name, k)}
        check_kinds(f"loss {name}: loss_params", cls.__init__, given)
        if hasattr(cls, "check_args"):
            try:
                cls.check_args(**given)
            except (ValueError, TypeError) as err:
                raise ValueError(f"loss {name}: loss_params.{err}") from None


def build(spec: str, context: dict | None = None, **params) -> nn.Module:
    """Build a loss from a name or a composite spec.

    Args:
        spec: a registered name (``"l1"``) or a weighted sum (``"l1+0.5*kl"``).
        context: settings of the run that some losses use and others do not (e.g. ``encoder_weights`` and
            ``vgg_width`` for the losses that own a VGG); each term receives those it takes, the rest are ignored.
        params: the loss's own keyword arguments; each must be taken by at least one term (which receives it).

    Raises:
        ValueError: unknown loss, or a parameter no term takes (naming the valid ones).
    """
    check_params(spec, params)
    terms = parse_spec(spec)
    built = []
    for weight, name in terms:
        kwargs = {k: v for k, v in {**(context or {}), **params}.items() if _takes(name, k)}
        built.append((weight, get_class(name)(**kwargs)))
    if len(built) == 1 and built[0][0] == 1.0:
        return built[0][1]
    return CompositeLoss(built, spec)


def _tunables_of(names) -> dict[str, Tunable]:
    """The ``tunable`` declarations of the losses ``names``, merged in order (a parameter two declare: the first's)."""
    out: dict[str, Tunable] = {}
    for name in names:
        for key, t in getattr(get_class(name), "tunable", {}).items():
            out.setdefault(key, t)
    return out


def tunables(spec: str) -> dict[str, Tunable]:
    """The parameters ``bench.tune`` searches for the loss ``spec`` (besides ``lr``): those its terms declare in
    ``tunable``, in the order of the terms (a parameter two terms declare: the first term's range)."""
    return _tunables_of(name for _, name in parse_spec(spec))


def all_tunables() -> dict[str, Tunable]:
    """Every tunable parameter of every registered loss (the first loss by name that declares one sets its range)."""
    return _tunables_of(available())


def shown() -> list[str]:
    """The parameters that some registered loss shows (``shown``): by loss name, then in each loss's order."""
    return list(dict.fromkeys(k for name in available() for k in getattr(get_class(name), "shown", ())))


def positive() -> list[str]:
    """Parameters that must be positive numbers in any loss's ``loss_params``: ``loss_weight`` (every loss) and
    each tunable declared ``positive`` by some registered loss."""
    return ["loss_weight", *(k for k, t in all_tunables().items() if t.positive and k != "loss_weight")]


def prior_bins(spec: str, params: dict):
    """The ``bench.data.abbins.ABBins`` over which a term of ``spec`` with ``params`` needs the training images' colour
    prior (its ``prior`` argument), or None when no term needs one (each term's ``prior_bins`` classmethod)."""
    for _, name in parse_spec(spec):
        cls = get_class(name)
        if hasattr(cls, "prior_bins"):
            bins = cls.prior_bins({k: v for k, v in params.items() if _takes(name, k)})
            if bins is not None:
                return bins
    return None


def head_of(spec: str) -> str:
    """The prediction head (``"ab"`` or ``"bins"``) a loss spec needs, without building it."""
    heads = {get_class(name).head for _, name in parse_spec(spec)}
    if len(heads) != 1:
        raise ValueError(f"loss spec {spec!r} mixes prediction heads {sorted(heads)}")
    return heads.pop()
