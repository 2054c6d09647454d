"""Tuned parameters: the name of a (model, loss) tuning study, its best parameters, and how they change a
configuration. Written by ``bench.tune``, read by ``bench.tune`` and by ``bench.ablate --tuned``."""
from __future__ import annotations

import json
import re

import losses

from bench.config.cell import CellConfig
from bench.core.paths import results_root
from bench.grid import study as gs


def tunable(loss: str) -> dict:
    """The loss parameters tuned besides ``lr``: name → ``losses.Tunable``, as the loss's terms declare them (e.g.
    the style weight λ of the AdaIN losses; none for ``mse``)."""
    return losses.tunables(loss)


def study_name(model: str, loss: str, preset_name: str, data: str) -> str:
    """The deterministic name of the tuning study (and of its results folder) of one (model, loss, preset, data)."""
    slug = re.sub(r"[^A-Za-z0-9_.]+", "_", loss.replace("+", "_plus_").replace("*", "x")).strip("_")
    return f"tune-{model}-{slug}-{preset_name}-{data}"


def apply_params(cfg: CellConfig, params: dict) -> CellConfig:
    """``cfg`` with tuned parameters applied: ``lr``, and the loss's tunable parameters (every other name of a
    study's parameters) merged into ``loss_params``."""
    changes = {}
    if "lr" in params:
        changes["lr"] = float(params["lr"])
    own = {k: float(v) for k, v in params.items() if k != "lr"}
    if own:
        changes["loss_params"] = {**cfg.loss_params, **own}
    return cfg.replace(**changes)


def load_best(model: str, loss: str, preset_name: str, data: str, storage: str | None = None) -> dict:
    """The best parameters of a tuning study: from ``storage`` if it holds the study, else from
    ``<results>/<study name>/best_params.json``.

    Args:
        model, loss, preset_name, data: what was tuned (they name the study).
        storage: Optuna storage URL shared by the workers, if any.

    Returns:
        dict with ``params`` (``lr`` and the loss's tunable parameters, if any), ``value`` and ``study``.

    Raises:
        ValueError: no finished tuning study (with the command that makes one).
    """
    name = study_name(model, loss, preset_name, data)
    if storage:
        best = gs.best_of(storage, name)
        if best is not None:
            return {"params": best.params, "value": best.value, "study": name}
    path = results_root() / name / "best_params.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"--tuned: no tuning results for model {model}, loss {loss} ({path} not found"
                         f"{' and no study ' + name + ' in --storage' if storage else ''}); run "
                         f"python -m bench.tune --models {model} --loss '{loss}' --preset {preset_name} first") from None
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"--tuned: cannot read {path} ({err})") from None
