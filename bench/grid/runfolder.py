"""The records of a run folder: its identity (``identity.json``), ``run.json``, and the CSV files kept in step with
the run's study."""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING

import optuna
from optuna.trial import TrialState

from bench.core.records import (
    IMAGE_KEY, RUN_KEY, STEP_KEY, append_rows, atomic_write_text, locked, read_json, read_rows, utc_now)
from bench.data.sources import listing_hash
from bench.grid import study as gs
from bench.grid.plan import identity_differences, key_str
from bench.metrics import stats as pstats

if TYPE_CHECKING:
    from bench.training.loop import Prepared

#: A run folder's identity: the configuration of every (model, cell) and the data (every file's content hash).
IDENTITY = "identity.json"
#: A run folder's description: command, configuration, study, splits, environment (``write_run_json``).
RUN_JSON = "run.json"

# ------------------------------------------------------------------------------------------------ the folder's files


def read_local_rows(run_dir: Path) -> list[dict]:
    """The rows of the folder's ``runs.csv``; ``per_image.csv`` and ``history.csv`` are validated as well (they are
    appended to after training).

    Raises:
        CorruptRecordError: a damaged file.
    """
    rows = read_rows(run_dir / "runs.csv")
    read_rows(run_dir / "per_image.csv")
    read_rows(run_dir / "history.csv")
    return rows


def recorded_base_config(run_dir: Path) -> dict:
    """The base configuration recorded in the folder's ``run.json`` (empty without one).

    Raises:
        CorruptRecordError: a damaged ``run.json``.
    """
    path = run_dir / RUN_JSON
    return read_json(path).get("base_config", {}) if path.is_file() else {}


def append_run(run_dir: Path, runs: list[dict], per_image: list[dict], history: list[dict] | None = None) -> None:
    """Append rows to ``per_image.csv``, ``history.csv`` (unless None) and ``runs.csv``, in this order: a run counts
    as done only once its ``runs.csv`` row exists. Rows whose key is already there are left out."""
    append_rows(run_dir / "per_image.csv", per_image, key=IMAGE_KEY)
    if history is not None:
        append_rows(run_dir / "history.csv", history, key=STEP_KEY)
    append_rows(run_dir / "runs.csv", runs, key=RUN_KEY)


def bind(run_dir: Path, identity: dict) -> bool:
    """Bind the run folder to a run's ``identity`` in ``identity.json``, under a lock: a folder bound to another
    configuration or other data is refused, so that two different runs started at once with one ``--out`` cannot
    both write to it. Returns whether the file was created here.

    Raises:
        ValueError: naming the differences (``bench.grid.plan.identity_differences``).
        CorruptRecordError: a damaged ``identity.json``.
    """
    path = run_dir / IDENTITY
    with locked(path):
        old = read_json(path) if path.is_file() else {}
        diff = identity_differences(old, identity)
        if diff:
            raise ValueError(f"run folder {run_dir} holds results of {'; '.join(diff)}; pass another "
                             f"--out (results of different runs are never pooled in one folder)")
        merged = {**old, **identity, "cells": {**old.get("cells", {}), **identity["cells"]}}
        if merged != old:
            atomic_write_text(path, json.dumps(merged, indent=1))
    return not old


def unbind(run_dir: Path) -> None:
    """Remove ``identity.json`` and its lock file (what ``bind`` created), if there."""
    for name in (IDENTITY, IDENTITY + ".lock"):
        with contextlib.suppress(OSError):
            (run_dir / name).unlink()


def data_fingerprint(preps: list[Prepared]) -> dict:
    """``{fold: {split: {image key: SHA-1 of the file}}}`` of the decoded data (fold "0" without folds): what a run
    folder's results were trained, validated and tested on."""
    hashes: dict[Path, str] = {}
    out = {}
    for f, p in enumerate(preps):
        out[str(f)] = {}
        for split in ("train", "val", "test"):
            if split == "train" and p.streamed:  # too many to read before step 1: the listing stands for them
                out[str(f)][split] = {"listing (path, bytes, mtime)": listing_hash(p.splits.train)}
                continue
            files = {}
            for path in getattr(p.splits, split):
                if path not in hashes:
                    try:
                        hashes[path] = hashlib.sha1(Path(path).read_bytes()).hexdigest()
                    except OSError:  # an unreadable file (skipped by the data loader)
                        hashes[path] = "unreadable"
                files[p.splits.key(split, path)] = hashes[path]
            out[str(f)][split] = dict(sorted(files.items()))
    return out


def fingerprints(preps: list[Prepared]) -> dict:
    """Content fingerprints of every training and validation image of every fold (``bench.data.sources.fingerprint``):
    ``bench.evaluate`` refuses a test image that matches one, without needing the files."""
    out: dict = {}
    for q in preps:
        for split, fps in q.fingerprints.items():
            out.setdefault(split, {}).update(fps)
    return out


def write_run_json(run_dir: Path, head: dict, preps: list[Prepared], folds: int, mean_ab: list, env: dict) -> None:
    """``run.json``: ``head`` (the command, grid, preset, base configuration, study ...), then the number of folds,
    splits (exact file lists; with folds every fold's, and the whole test set under ``splits``), skipped files, the
    mean-colour baseline's ``mean_ab``, the training images' fingerprints and the environment."""
    p = preps[0]
    if folds > 1:  # every fold's file lists; "splits" has the whole test set: every fold's test images
        splits = {"folds": folds, "splits": {"test": [str(x) for q in preps for x in q.splits.test]},
                  "fold_splits": [{"fold": f, **{k: [str(x) for x in getattr(q.splits, k)]
                                                 for k in ("train", "val", "test")}}
                                  for f, q in enumerate(preps)]}
    else:
        splits = {"folds": 1, "splits": {k: [str(f) for f in getattr(p.splits, k)] for k in ("train", "val", "test")}}
    atomic_write_text(run_dir / RUN_JSON, json.dumps({
        **head, **splits,
        "skipped": [s for q in preps for s in q.skipped], "mean_ab": mean_ab,
        "fingerprints": fingerprints(preps), "environment": env, "written_at": utc_now()},
        indent=2))


# ------------------------------------------------------------------------------------------------ study ↔ folder


def trial_records(row: dict, per_image: list[dict], history: list[dict]) -> dict[str, str]:
    """A finished run's rows as a trial stores them (``bench.grid.study.close(records=...)``): ``row``, and
    ``per_image`` and ``history`` by column (compact)."""
    return {"row": gs.dumps(row), "per_image": gs.dumps(to_columns(per_image)),
            "history": gs.dumps(to_columns(history))}


def to_columns(rows: list[dict]) -> dict:
    """Rows → {column: [values]}: a compact user attribute."""
    names = list(dict.fromkeys(k for r in rows for k in r))
    return {k: [r.get(k) for r in rows] for k in names}


def from_columns(cols: dict) -> list[dict]:
    """{column: [values]} → rows (``to_columns`` undone; a row leaves out the columns it did not have)."""
    n = max((len(v) for v in cols.values()), default=0)
    return [{k: v[i] for k, v in cols.items() if v[i] is not None} for i in range(n)]


def test_means(per_image: list[dict], row: dict | None = None) -> dict[str, float]:
    """``test_<metric>`` for every metric of the table (numeric user attributes for the dashboard): a per-image
    metric's mean over the run's ``per_image`` rows, a per-set metric's value in its run ``row``."""
    out = {}
    for m in pstats.METRICS.values():
        if m.per == "image":
            vals = [float(r[m.name]) for r in per_image if isinstance(r.get(m.name), (int, float))]
            if vals:
                out[f"test_{m.name}"] = sum(vals) / len(vals)
        elif row is not None and isinstance(row.get(m.name), (int, float)):
            out[f"test_{m.name}"] = float(row[m.name])
    return out


def import_local_rows(study: optuna.Study, local_rows: list[dict], keys: dict[str, dict], distributions: dict) -> int:
    """Runs recorded in a folder's runs.csv (``local_rows``, e.g. by the pre-study runner) but unknown to the storage
    become finished trials, so that no worker trains them again and every worker's leaderboard shows them. Only the
    run keys of ``keys`` (key → trial parameters, ``GridRun.keys``) are imported. Returns how many."""
    known = {gs.key_of(t) for t in study.get_trials(deepcopy=False)}
    n = 0
    for r in local_rows:
        k = key_str(r.get("model"), r.get("cell"), r.get("seed"), r.get("fold"))
        if k not in keys or k in known:
            continue
        attrs = {**keys[k], "key": k, "worker": "imported from runs.csv"}
        system = {gs.RECORD_PREFIX + "row": gs.dumps(r)}
        try:
            value = float(r.get("val_psnr", "nan"))
        except ValueError:
            value = math.nan
        params = {"params": {p: v for p, v in keys[k].items() if p in distributions},
                  "distributions": distributions, "system_attrs": system}
        if r.get("status") == "ok" and math.isfinite(value):
            t = optuna.trial.create_trial(state=TrialState.COMPLETE, value=value,
                                          user_attrs={**attrs, "outcome": "ok"}, **params)
        else:
            t = optuna.trial.create_trial(state=TrialState.FAIL, user_attrs={**attrs, "outcome": "diverged",
                                                                             "error": r.get("error", "")}, **params)
        study.add_trial(t)
        known.add(k)
        n += 1
    return n


def sync_records(study: optuna.Study, keys: dict[str, dict], run_dir: Path, shared: dict | None = None) -> None:
    """Append every finished run of ``keys`` in the storage (from any worker) to the folder's CSV files (no
    duplicates). A key given up after repeated crashes gets a failed row (``shared``'s columns, the run folder's
    name as ``run`` without them)."""
    runs, per_image, history = [], [], []
    for k, s in gs.key_states(study, keys).items():
        if k not in keys:
            continue
        done = (s.complete + s.diverged)[:1]
        if done:
            t = done[0]
            if gs.record(t, "row") is None:
                continue
            runs.append(json.loads(gs.record(t, "row")))
            per_image += from_columns(json.loads(gs.record(t, "per_image") or "{}"))
            history += from_columns(json.loads(gs.record(t, "history") or "{}"))
        elif s.finished:  # given up after repeated crashes
            last = s.crashes[-1]
            runs.append({**(shared or {"run": run_dir.name}), **keys[k], "status": "failed",
                         "error": f"worker lost {len(s.crashes)} times (no heartbeat or error: "
                                  f"{last.user_attrs.get('error', 'killed')})", "finished_at": utc_now()})
    append_run(run_dir, runs, per_image, history)
