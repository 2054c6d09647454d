"""The loss and model parameters the harness records, shows, validates and tunes, read from the registries' own
metadata (``losses.register_loss``: ``tunable``, ``shown``, ``prior_bins``; ``models.register_model``: ``shown``),
so that no module of ``bench`` names a particular loss's or model's parameter.

The registries (and with them torch) are imported when a function here is called, not with this module;
:func:`declared_tunables` reads the losses' source instead when the registry is not imported (``bench.tune --help``).
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path
from typing import NamedTuple
from bench.core.paths import SOURCE_ROOT


def shown_columns() -> list[str]:
    """The ``runs.csv`` columns of the shown parameters: every registered loss's ``shown``, then every registered
    model's (by registry name, each in its own order; a name once), so the order is stable across runs."""
    import losses
    import models

    return list(dict.fromkeys([*losses.shown(), *models.shown()]))


def shown_values(cfg) -> dict:
    """One value per :func:`shown_columns` column for a run of ``cfg`` (a ``CellConfig``): the loss parameter for
    a loss's column, the model parameter for a model's, blank where the cell does not set it."""
    import losses

    of_loss = set(losses.shown())
    out = {}
    for col in shown_columns():
        source = cfg.loss_params if col in of_loss else cfg.model_params
        out[col] = source.get(col, "")
    return out


def numeric_columns(df, cols) -> list[str]:
    """Those of ``cols`` in the DataFrame ``df`` whose non-blank values are all numbers (e.g. a weight, not a
    choice such as a skip treatment)."""
    import pandas as pd

    out = []
    for col in cols:
        if col not in df:
            continue
        values = df[col].dropna().astype(str)
        values = values[values.str.strip().str.len() > 0]
        if len(values) and pd.to_numeric(values, errors="coerce").notna().all():
            out.append(col)
    return out


def tuned_words(loss: str) -> str:
    """What ``bench.tune`` tunes for the loss spec, in words: ``"lr"`` or e.g. ``"lr and style weight λ"``."""
    import losses

    names = ["lr", *(t.label or k for k, t in losses.tunables(loss).items())]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def symbol(name: str) -> str:
    """A tuned parameter's short name in logs (its ``Tunable.symbol``, e.g. ``λ``; else the name)."""
    import losses

    t = losses.all_tunables().get(name)
    return (t.symbol if t is not None else "") or name


# ---------------------------------------------------------------------------------------------------------------------
# Tunable parameters read from the losses' source (bench.tune's --help imports no torch)
# ---------------------------------------------------------------------------------------------------------------------

#: ``losses.Tunable``'s fields in order: a declaration may give the first ones by position
_TUNABLE_FIELDS = ("low", "high", "log", "positive", "symbol", "label")


class DeclaredTunable(NamedTuple):
    """What ``bench.tune``'s ``--NAME-range`` option shows of a tunable loss parameter: its default range, its words."""

    low: float
    high: float
    label: str = ""


def declared_tunables() -> dict[str, DeclaredTunable]:
    """Every tunable loss parameter as ``losses.all_tunables()`` has it, for ``bench.tune``'s parser.

    From the registry when it is already imported (it then also holds losses registered at run time), else read from
    ``losses/*.py`` (:func:`tunables_in_source`): parsing the command line imports no torch.
    """
    if "losses" in sys.modules:
        import losses

        return {k: DeclaredTunable(t.low, t.high, t.label) for k, t in losses.all_tunables().items()}
    return tunables_in_source(SOURCE_ROOT / "losses")


def tunables_in_source(folder: Path) -> dict[str, DeclaredTunable]:
    """The ``tunable`` declarations of the loss classes registered in ``folder``'s files, merged as
    ``losses.all_tunables()`` merges them (by loss name; a parameter two losses declare: the first's range).

    Read with ``ast``, never imported. Understood: ``@register_loss("name")`` on a class, and a class attribute
    ``tunable = {"param": Tunable(low=..., high=..., label=...)}`` with literal keys and arguments, on the class or on
    a base class defined in ``folder``. Anything else declares nothing here (tests/test_param_metadata.py checks
    that the result equals the registry's).

    Args:
        folder: the ``losses`` package folder.
    """
    classes: dict[str, ast.ClassDef] = {}
    registered: dict[str, str] = {}  # loss name → class name
    for path in sorted(folder.glob("*.py")):
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (OSError, SyntaxError):
            continue
        for node in tree.body:
            if not isinstance(node, ast.ClassDef):
                continue
            classes[node.name] = node
            for d in node.decorator_list:
                if (isinstance(d, ast.Call) and _callee(d) == "register_loss" and d.args
                        and isinstance(d.args[0], ast.Constant) and isinstance(d.args[0].value, str)):
                    registered[d.args[0].value] = node.name
    out: dict[str, DeclaredTunable] = {}
    for name in sorted(registered):
        for key, t in (_class_tunables(classes, registered[name]) or {}).items():
            out.setdefault(key, t)
    return out


def _callee(call: ast.Call) -> str:
    """The called name of ``f(...)`` or ``module.f(...)``."""
    f = call.func
    return f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")


def _class_tunables(classes: dict[str, ast.ClassDef], name: str, seen: tuple[str, ...] = ()
                    ) -> dict[str, DeclaredTunable] | None:
    """A class's ``tunable``: its own assignment, else its bases' (left to right, depth first); None when neither
    it nor a base found in ``classes`` assigns one."""
    node = classes.get(name)
    if node is None or name in seen:  # a class from elsewhere (nn.Module) declares nothing
        return None
    value = None
    for stmt in node.body:  # the last assignment in the class body is the attribute
        value = _assigned(stmt, "tunable") or value
    if value is not None:
        return _literal_tunables(value)
    for base in node.bases:
        base_name = base.attr if isinstance(base, ast.Attribute) else getattr(base, "id", "")
        found = _class_tunables(classes, base_name, (*seen, name))
        if found is not None:
            return found
    return None


def _assigned(stmt: ast.stmt, name: str) -> ast.expr | None:
    """The value ``stmt`` assigns to ``name`` (``name = v``, ``name: T = v``, ``name, other = v, w``), else None."""
    if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.target.id == name:
        return stmt.value
    if isinstance(stmt, ast.Assign):
        for target in stmt.targets:
            if isinstance(target, ast.Name) and target.id == name:
                return stmt.value
            if (isinstance(target, ast.Tuple) and isinstance(stmt.value, ast.Tuple)
                    and len(target.elts) == len(stmt.value.elts)):
                for t, v in zip(target.elts, stmt.value.elts):
                    if isinstance(t, ast.Name) and t.id == name:
                        return v
    return None


def _literal_tunables(value: ast.expr) -> dict[str, DeclaredTunable]:
    """A literal ``{"param": Tunable(...)}`` dict; empty when the declaration is written any other way."""
    if not isinstance(value, ast.Dict):
        return {}
    out = {}
    for key, call in zip(value.keys, value.values):
        if not (isinstance(key, ast.Constant) and isinstance(key.value, str) and isinstance(call, ast.Call)
                and _callee(call) == "Tunable" and all(kw.arg for kw in call.keywords)):
            return {}
        try:
            given = {**dict(zip(_TUNABLE_FIELDS, map(ast.literal_eval, call.args))),
                     **{kw.arg: ast.literal_eval(kw.value) for kw in call.keywords}}
        except (ValueError, TypeError, SyntaxError):  # not a literal (a name, an expression)
            return {}
        if "low" not in given or "high" not in given:
            return {}
        out[key.value] = DeclaredTunable(given["low"], given["high"], given.get("label", ""))
    return out
