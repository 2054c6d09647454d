"""The plan of a grid run: its jobs (model × cell × seed × fold), the hash that names their configuration, and how
two configurations differ."""
from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Callable, NamedTuple

from bench.config.grids import Grid
from bench.core.paths import results_root
from bench.core.records import slug

# Pure functions: nothing is trained, decoded or written here. The modules that need torch (the model and loss
# registries, bench.config.cell, bench.data.sources) are imported inside the functions that use them: importing this
# module costs neither torch nor Optuna.
if TYPE_CHECKING:
    from bench.config.cell import CellConfig


#: The most training seeds per cell (``bench.cli.MAX_SEEDS``, repeated here for callers of ``plan_jobs``).
MAX_SEEDS = 1000


class Job(NamedTuple):
    """One training run of the plan: a model, a cell of the grid, its full configuration (seed included) and, with
    k-fold rotation, the fold whose training images it learns from and whose test images it is scored on."""

    model: str
    cell: str
    cfg: CellConfig
    fold: int | None = None

    @property
    def key(self) -> str:
        return key_str(self.model, self.cell, self.cfg.seed, self.fold)


def key_str(model: str, cell: str, seed, fold=None) -> str:
    """The grid key of a run (``model/cell/seed``, ``model/cell/seed/fold2`` with folds): its identity in the study
    and in the CSV files."""
    return f"{model}/{cell}/{seed}" + ("" if fold in (None, "") else f"/fold{fold}")


def plan_jobs(grid: Grid, base: CellConfig, model_names: list[str], seeds: int,
              best_params: Callable[[str, str], dict] | None = None, folds: int = 1) -> list[Job]:
    """Validate everything and list the jobs (model × cell × seed, × fold with k-fold rotation) — before any data
    is decoded.

    Args:
        grid: the cells; each cell's changes are merged into ``base`` (``bench.config.cell.merge``).
        base: the preset with the command line's overrides.
        model_names: the models crossed with the grid.
        seeds: training seeds per cell (0 .. seeds-1, after the cell's ``seed_offset``).
        best_params: ``(model, loss) → tuned parameters`` (``--tuned``); they replace the preset's values but never
            what the cell itself sets.
        folds: 1 for one train/validation/test split; k ≥ 2 for k-fold rotation (one job per fold).

    Raises:
        ValueError: with a one-line message for any invalid model, cell or setting.
    """
    import models

    from bench.config.models_check import check_backbones, check_encoder_weights

    if seeds < 1:
        raise ValueError(f"--seeds must be at least 1, got {seeds}")
    if seeds > MAX_SEEDS:
        raise ValueError(f"--seeds must be at most {MAX_SEEDS} (the bound), got {seeds}")
    if folds < 1:
        raise ValueError(f"--folds must be at least 1, got {folds}")
    for m in model_names:
        models.get_factory(m)
    check_folder_names(grid)
    base, run_wide = _run_wide_params(grid, base)
    jobs = []
    for m in model_names:
        for cell in grid.cells:
            cfg = _cell_config(grid, cell, base, m, run_wide, best_params)
            jobs += [Job(m, cell.name, cfg.replace(seed=cell.seed_offset + seed), fold if folds > 1 else None)
                     for seed in range(seeds) for fold in range(folds)]
    check_encoder_weights(base, model_names, [j.cfg.loss for j in jobs])
    check_backbones([j.cfg for j in jobs])
    return jobs


def _run_wide_params(grid: Grid, base: CellConfig) -> tuple[CellConfig, dict]:
    """The base without its loss parameters, and those parameters (run-wide: preset, --set, config file), which go
    to the cells whose loss takes them: --set loss_params.rebalance=true reaches the kl cells and not mse. One that
    no cell's loss takes is an error, as a cell's own parameter that its loss does not take is."""
    import losses

    base.validate(loss_takes_params=False)
    run_wide = dict(base.loss_params)
    cell_losses = {cell.changes.get("loss", base.loss) for cell in grid.cells}
    unused = [k for k in run_wide if not any(losses.takes(spec, k) for spec in cell_losses)]
    if unused:
        raise ValueError(f"grid {grid.name}: no loss of the grid ({', '.join(sorted(cell_losses))}) takes "
                         f"loss_params {', '.join(unused)}")
    return base.replace(loss_params={}), run_wide


def _cell_config(grid: Grid, cell, base: CellConfig, model: str, run_wide: dict,
                 best_params: Callable[[str, str], dict] | None) -> CellConfig:
    """One (model, cell)'s configuration, validated: the base, the run-wide loss parameters its loss takes, the
    cell's changes, then (``--tuned``) the tuned parameters the cell does not set itself."""
    import losses

    from bench.config.cell import merge

    try:
        spec = cell.changes.get("loss", base.loss)
        taken = {k: v for k, v in run_wide.items() if losses.takes(spec, k)}
        cfg = merge(base.replace(model=model, loss_params=taken), cell.changes)
        cfg.validate()
        if cfg.decode_size != base.decode_size:  # the training set is decoded once for every cell
            raise ValueError("train_size is run-wide (the training images are decoded once for every "
                             "cell): set it in the preset, --set or the config file, not in a cell")
    except (ValueError, TypeError) as err:
        raise ValueError(f"grid {grid.name}, cell {cell.name}: {err}") from None
    if best_params is not None:
        from bench.grid.tuned import apply_params  # Optuna: only for --tuned

        best = best_params(model, cfg.loss)
        own = set(cell.changes) | set(cell.changes.get("loss_params", {}))
        cfg = apply_params(cfg, {k: v for k, v in best.items() if k not in own})
        cfg.validate()
    return cfg


def check_folder_names(grid: Grid) -> None:
    """Refuse a grid two of whose cells would share a folder (weights, samples): the same name, or names with the
    same file-name form (``"a b"`` and ``"a_b"``; ``"A"`` and ``"a"`` on a case-insensitive disk).

    Raises:
        ValueError: naming both cells and their folder name.
    """
    seen: dict[str, str] = {}
    for cell in grid.cells:
        name = str(cell.name)
        folder = slug(name)
        other = seen.get(folder.casefold())
        if other is not None:
            same = "the same name" if other == name else f"the same folder name {folder!r}"
            raise ValueError(f"grid {grid.name}: cells {other!r} and {name!r} have {same}; rename one")
        seen[folder.casefold()] = name


@lru_cache(maxsize=None)
def config_columns() -> tuple[str, ...]:
    """The fields of a row that make up its configuration: every ``CellConfig`` field but the seed, which is part of
    the row's key."""
    import dataclasses

    from bench.config.cell import CellConfig

    return tuple(f.name for f in dataclasses.fields(CellConfig) if f.name != "seed")


#: The fields of a row that name the data it was trained and tested on.
DATA_COLUMNS = ("data_train", "data_test")


def _data_id(data: str | None, root: str | None) -> str:
    """The data set as it enters a configuration hash: a named set by name, a folder by its absolute path."""
    from bench.data.sources import data_root, resolve

    name, folder, named = resolve(data, data_root(root))
    return name if named else str(Path(folder).resolve())


def config_hash(jobs: list[Job], data: str | None, test: str | None, root: str | None) -> str:
    """8 hex digits naming a configuration: every (model, cell)'s full configuration and the data. The number of
    seeds is left out, so that ``--seeds 3`` after ``--seeds 2`` adds a seed to the same folder."""
    cells = sorted({json.dumps([j.model, j.cell, {k: v for k, v in j.cfg.to_flat().items() if k != "seed"}],
                               sort_keys=True, default=str) for j in jobs})
    blob = json.dumps(cells + [_data_id(data, root), _data_id(test, root) if test else ""], default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:8]


def default_run_dir(grid: str, preset_name: str, data: str | None, root: str | None, jobs: list[Job] | None = None,
                    test: str | None = None) -> Path:
    """``<results>/<grid>-<preset>-<data>-<config hash>``: the run folder when ``--out`` is not given. A changed
    configuration (``--steps``, ``--lr``, ``--set``, other data) gets its own folder."""
    from bench.data.sources import data_root, resolve

    dname = resolve(data, data_root(root))[0]
    suffix = f"-{config_hash(jobs, data, test, root)}" if jobs else ""
    return results_root() / f"{grid}-{preset_name}-{dname}{suffix}"


def config_differences(row: dict, job: Job | None, data: dict | None = None) -> dict[str, tuple[str, str]]:
    """The configuration keys on which a recorded row differs from ``job`` (and from ``data``, the names of the
    train and test sets): key → (recorded value, new value). Columns a row does not have are not compared."""
    want = {k: v for k, v in job.cfg.to_flat().items() if k in config_columns()} if job is not None else {}
    want.update(data or {})
    diff = {}
    for k, v in want.items():
        if k in row and row[k] not in (None, "") and str(row[k]) != str(v):
            diff[k] = (str(row[k]), str(v))
    return diff


def _names(keys, n: int = 3) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:n]) + (f" and {len(keys) - n} more" if len(keys) > n else "")


def identity_differences(old: dict, new: dict) -> list[str]:
    """What differs between two run-folder identities (``GridRun.identity``): the base configuration, a (model, cell)
    both have, the number of folds, and the data when both know them. Cells that only one has are no difference (a
    grid may grow)."""
    out = []
    diff = config_differences(old.get("base_config", {}), None, new.get("base_config", {}))
    if diff:
        out.append(f"another configuration ({describe(diff)})")
    for cell, cfg in new.get("cells", {}).items():
        if cell in old.get("cells", {}):
            diff = config_differences(old["cells"][cell], None, cfg)
            if diff:
                out.append(f"another configuration of {cell} ({describe(diff)})")
    if "folds" in old and old["folds"] != new.get("folds"):
        out.append(f"another number of folds ({old['folds']} → {new.get('folds')})")
    if "data" in old and "data" in new and old["data"] != new["data"]:
        for fold in sorted(set(old["data"]) | set(new["data"])):
            for split in ("train", "val", "test"):
                a, b = old["data"].get(fold, {}).get(split, {}), new["data"].get(fold, {}).get(split, {})
                where = split + ("" if len(new["data"]) < 2 else f" of fold {fold}")
                for what, keys in (("added", b.keys() - a.keys()), ("removed", a.keys() - b.keys()),
                                   ("changed", {k for k in a.keys() & b.keys() if a[k] != b[k]})):
                    if keys:
                        out.append(f"other data ({where}: {len(keys)} image(s) {what}: {_names(keys)})")
    return out


def describe(diff: dict[str, tuple[str, str]]) -> str:
    """A difference (``config_differences``) as the messages print it: ``key: old → new, ...``."""
    return ", ".join(f"{k}: {a} → {b}" for k, (a, b) in sorted(diff.items()))
