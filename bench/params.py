"""The loss and model parameters the harness records, shows, validates and tunes, read from the registries' own
metadata (``losses.register_loss``: ``tunable``, ``shown``, ``prior_bins``; ``models.register_model``: ``shown``),
so that no module of ``bench`` names a particular loss's or model's parameter.

The registries (and with them torch) are imported when a function here is called, not with this module.
"""
from __future__ import annotations


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
