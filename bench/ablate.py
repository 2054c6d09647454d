"""Train every cell of a named grid over several seeds, record every run, and print the PSNR leaderboard.

    python -m bench.ablate --grid losses                     # quick preset on the bundled Kodak24, CPU-sized
    python -m bench.ablate --grid losses --preset paper --data imagenet-sample --data-root ../shared/data
    python -m bench.ablate --list-grids

Results go to ``results/<grid>-<preset>-<data>/`` (or ``--out``): ``runs.csv`` (one row per cell × seed: config,
metrics, timings, environment), ``per_image.csv``, ``history.csv``, ``leaderboard.md``/``.csv`` and ``psnr.png``.
Re-running the same command resumes: finished (cell, seed) pairs are not trained again.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path

from tqdm.auto import tqdm

import models

from . import grids, leaderboard
from .config import PRESETS, CellConfig, preset
from .data import DataError, resolve, data_root
from .evaluate import evaluate_grey
from .records import CorruptRecordError, append_rows, atomic_write_text, environment, read_rows
from .train import DivergenceError, Prepared, pick_device, prepare, train_cell
from .models_check import check_encoder_weights

RESULTS = Path(__file__).resolve().parent.parent / "results"
RUN_KEY = ("model", "cell", "seed")


class UsageError(ValueError):
    """A bad command line or configuration: reported in one line with exit code 2, before any training."""


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.ablate", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--grid", default="losses", help="named grid (see --list-grids); default: losses")
    p.add_argument("--list-grids", action="store_true", help="list the named grids and their cells, then exit")
    p.add_argument("--models", nargs="+", default=None, help=f"models to cross with the grid (default: the preset's; "
                   f"available: {', '.join(models.available())})")
    p.add_argument("--seeds", type=int, default=2, help="training seeds per cell (default 2)")
    p.add_argument("--preset", default=None, choices=sorted(PRESETS),
                   help="quick (default without a GPU) or paper (default with one)")
    p.add_argument("--data", default=None, help="training data: imagenet-sample | kodak24 | cbsd68 | a folder "
                   "(default: the bundled, downscaled Kodak24)")
    p.add_argument("--test", default=None, help="held-out test set (named or folder); default: the data set's own")
    p.add_argument("--data-root", default=None, help="folder with the named data sets (default: $BENCH_DATA)")
    p.add_argument("--out", default=None, help="run folder (default: results/<grid>-<preset>-<data>)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: CUDA if available)")
    p.add_argument("--steps", type=int, default=None, help="override the preset's number of training steps")
    p.add_argument("--lr", type=float, default=None, help="override the preset's learning rate")
    p.add_argument("--encoder-weights", default=None, help="none | imagenet | PATH (override the preset)")
    p.add_argument("--crop-seed", type=int, default=0, help="seed of the fixed crops shared by all cells (default 0)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any CellConfig field, e.g. --set batch_size=8 (JSON values)")
    p.add_argument("--no-verify", action="store_true", help="skip the SHA256 check of named data sets")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p.parse_args(argv)


def base_config(args, device) -> CellConfig:
    name = args.preset or ("paper" if device.type == "cuda" else "quick")
    cfg = preset(name)
    changes = {}
    if args.steps is not None:
        changes["steps"] = args.steps
    if args.lr is not None:
        changes["lr"] = args.lr
    if args.encoder_weights is not None:
        changes["encoder_weights"] = args.encoder_weights
    changes["crop_seed"] = args.crop_seed
    for item in args.set:
        if "=" not in item:
            raise UsageError(f"--set expects KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        try:
            changes[key] = json.loads(value)
        except json.JSONDecodeError:
            changes[key] = value
    try:
        return cfg.replace(**changes), name
    except (ValueError, TypeError) as err:
        raise UsageError(str(err)) from None


def plan(args, device) -> tuple[CellConfig, str, list[tuple[str, str, CellConfig]]]:
    """Validate everything and list the jobs as (model, cell, config) — before any data is decoded."""
    if args.seeds < 1:
        raise UsageError(f"--seeds must be at least 1, got {args.seeds}")
    grid = grids.get(args.grid)
    base, preset_name = base_config(args, device)
    model_names = args.models or [base.model]
    for m in model_names:
        models.get_factory(m)
    jobs = []
    for m in model_names:
        for cell in grid.cells:
            changes = dict(cell.changes)
            if "loss_params" in changes:
                changes["loss_params"] = {**base.loss_params, **changes["loss_params"]}
            cfg = base.replace(model=m, **changes)
            cfg.validate()
            for seed in range(args.seeds):
                jobs.append((m, cell.name, cfg.replace(seed=seed)))
    base.validate()
    check_encoder_weights(base, model_names)
    return base, preset_name, jobs


def run_dir_for(args, preset_name: str) -> Path:
    if args.out:
        return Path(args.out).expanduser()
    dname, _, _ = resolve(args.data, data_root(args.data_root))
    return RESULTS / f"{args.grid}-{preset_name}-{dname}"


def check_writable(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise UsageError(f"output folder {path} is not writable ({err.strerror or err})") from None


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def run_record(run_dir: Path, grid: str, prep: Prepared, env: dict) -> dict:
    """Columns shared by every row of a run."""
    return {
        "run": run_dir.name, "grid": grid,
        "data_train": prep.splits.names["train"], "data_test": prep.splits.names["test"],
        "n_train": len(prep.train), "n_val": len(prep.val_images), "n_test": len(prep.test_images),
        "n_skipped": len(prep.skipped), **env,
    }


def grey_row(prep: Prepared, shared: dict, device) -> tuple[dict, list[dict]]:
    scores = evaluate_grey(prep.test_images, device)
    row = {**shared, "model": "(none)", "cell": leaderboard.GREY, "loss": "(none)", "seed": 0, "status": "ok",
           "encoder_pretrained": False, "started_at": _now(), "finished_at": _now(),
           **{k: sum(v) / len(v) for k, v in scores.items()}}
    per_image = [{"run": shared["run"], "model": "(none)", "cell": leaderboard.GREY, "seed": 0,
                  "image": Path(f).name, **{k: v[i] for k, v in scores.items()}} for i, f in enumerate(prep.test_files)]
    return row, per_image


def run_job(model_name, cell, cfg, prep, device, shared, progress) -> tuple[dict, list[dict], list[dict]]:
    """Train one (cell, seed); return its run row, per-image rows and history rows. Divergence → a failed row."""
    row = {**shared, "model": model_name, "cell": cell, **cfg.to_flat(), "started_at": _now()}
    row["style_weight"] = cfg.loss_params.get("style_weight", "")
    row["skips"] = cfg.model_params.get("skips", "")
    key = {"run": shared["run"], "model": model_name, "cell": cell, "seed": cfg.seed}
    try:
        res = train_cell(cfg, prep, device, progress=progress, desc=f"{cell} seed {cfg.seed}")
    except DivergenceError as err:
        row.update(status="failed", failed_step=err.step, error=err.reason, finished_at=_now())
        return row, [], []
    row.update(res["metrics"], status="ok", encoder_pretrained=res["encoder_pretrained"], finished_at=_now())
    per_image = [{**key, "image": Path(f).name, **{k: v[i] for k, v in res["per_image"].items()}}
                 for i, f in enumerate(prep.test_files)]
    history = [{**key, **h} for h in res["history"]]
    return row, per_image, history


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.list_grids:
        for g in grids.GRIDS.values():
            print(f"{g.name}: {g.description}")
            for c in g.cells:
                print(f"    {c.name:<14} {json.dumps(c.changes)}")
        return 0
    try:
        device = pick_device(args.device)
        base, preset_name, jobs = plan(args, device)
        run_dir = run_dir_for(args, preset_name)
        check_writable(run_dir)
        done = {tuple(str(r[k]) for k in RUN_KEY) for r in read_rows(run_dir / "runs.csv")}
    except (ValueError, DataError, CorruptRecordError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    todo = [j for j in jobs if (j[0], j[1], str(j[2].seed)) not in done]
    print(f"{args.grid}: {len(jobs)} runs ({len(jobs) - len(todo)} already done) → {run_dir}", file=sys.stderr)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            prep = prepare(base, args.data, args.test, args.data_root, verify=not args.no_verify)
        for w in caught:
            print(f"warning: {w.message}", file=sys.stderr)
    except (ValueError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    env = environment(device)
    shared = run_record(run_dir, args.grid, prep, env)
    atomic_write_text(run_dir / "run.json", json.dumps({
        "command": "python -m bench.ablate " + " ".join(sys.argv[1:] if argv is None else argv),
        "grid": args.grid, "preset": preset_name, "base_config": base.to_flat(), "seeds": args.seeds,
        "splits": {k: [str(p) for p in getattr(prep.splits, k)] for k in ("train", "val", "test")},
        "skipped": prep.skipped, "environment": env, "written_at": _now()}, indent=2))

    try:
        if ("(none)", leaderboard.GREY, "0") not in done:
            row, per_image = grey_row(prep, shared, device)
            append_rows(run_dir / "per_image.csv", per_image, key=("model", "cell", "seed", "image"))
            append_rows(run_dir / "runs.csv", [row], key=RUN_KEY)
        t0 = time.perf_counter()
        for model_name, cell, cfg in tqdm(todo, desc=f"grid {args.grid}", disable=args.no_progress, dynamic_ncols=True):
            row, per_image, history = run_job(model_name, cell, cfg, prep, device, shared, not args.no_progress)
            # per-image and history rows first: a run counts as done only once its runs.csv row exists
            append_rows(run_dir / "per_image.csv", per_image, key=("model", "cell", "seed", "image"))
            append_rows(run_dir / "history.csv", history, key=("model", "cell", "seed", "step"))
            append_rows(run_dir / "runs.csv", [row], key=RUN_KEY)
            if row["status"] != "ok":
                tqdm.write(f"{model_name}/{cell} seed {cfg.seed} failed at step {row['failed_step']}: {row['error']}")
    except KeyboardInterrupt:
        print(f"\ninterrupted: finished runs are saved in {run_dir}; run the same command again to resume.",
              file=sys.stderr)
        return 130
    _, md = leaderboard.write(run_dir)
    print(md)
    if todo:
        print(f"{len(todo)} runs in {time.perf_counter() - t0:.0f} s; results in {run_dir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
