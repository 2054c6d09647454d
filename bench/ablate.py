"""Train every cell of a named grid over several seeds, record every run, and print the PSNR leaderboard.

    python -m bench.ablate --grid losses                     # quick preset on the bundled Kodak24, CPU-sized
    python -m bench.ablate --grid losses --preset paper --data imagenet-sample --data-root ../shared/data
    python -m bench.ablate --grid losses --storage postgresql+psycopg://user@db-host/optuna   # on every machine
    python -m bench.ablate --list-grids

Each (model, cell, seed) is one trial of an Optuna study (``bench.study``) stored in ``results/<run>/study.journal``
or in ``--storage``: start the same command on several processes or machines and they split the grid, each run
trained exactly once. Results go to ``results/<grid>-<preset>-<data>/`` (or ``--out``): ``runs.csv`` (one row per
cell × seed: config, metrics, timings, environment), ``per_image.csv``, ``history.csv``, ``leaderboard.md``/``.csv``
and ``psnr.png``; the leaderboard is built from every worker's results in the storage. Re-running the same command
resumes: finished (cell, seed) pairs are not trained again, and runs of a worker that died (no heartbeat for
``3 × --heartbeat`` seconds) are trained again.

Test hook: with ``COLORBENCH_TEST_HANG_AT_STEP=N`` in the environment a worker blocks after its first validation at
step ≥ N (heartbeat still running), so that tests can kill it mid-trial deterministically.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path

import optuna
from optuna.trial import TrialState
from tqdm.auto import tqdm

import models

from . import grids, leaderboard
from . import study as gs
from .config import CellConfig, add_training_arguments, default_preset, parse_overrides, preset
from .data import DataError, resolve, data_root
from .metrics import evaluate_grey
from .records import CorruptRecordError, append_rows, atomic_write_text, environment, read_rows
from .samples import save_samples
from .train import DivergenceError, Prepared, autocast_dtype, pick_device, prepare, train_cell
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
    p.add_argument("--test", default=None, help="held-out test set (named or folder); default: the data set's own")
    p.add_argument("--out", default=None, help="run folder (default: results/<grid>-<preset>-<data>)")
    p.add_argument("--lr", type=float, default=None, help="override the preset's learning rate")
    p.add_argument("--encoder-weights", default=None, help="none | imagenet | PATH (override the preset)")
    p.add_argument("--crop-seed", type=int, default=0, help="seed of the fixed crops shared by all cells (default 0)")
    g = p.add_argument_group("shared study (several workers, one grid)")
    g.add_argument("--storage", default=None, metavar="URL",
                   help="Optuna storage shared by the workers: a journal file path, sqlite:///FILE, "
                   "postgresql+psycopg://USER@HOST/DB ... (default: <run folder>/study.journal)")
    g.add_argument("--study-name", default=None,
                   help="study name (default: derived from grid, preset, data and configuration)")
    g.add_argument("--heartbeat", type=int, default=30, metavar="SECONDS",
                   help="heartbeat interval of a running trial; after 3× this without one it is retried (default 30)")
    g.add_argument("--tuned", action="store_true",
                   help="train each cell with the best lr (and style weight) of its bench.tune study")
    add_training_arguments(p)
    return p.parse_args(argv)


def base_config(args, device) -> CellConfig:
    name = default_preset(args.preset, device)
    cfg = preset(name)
    changes = {}
    if args.steps is not None:
        changes["steps"] = args.steps
    if args.lr is not None:
        changes["lr"] = args.lr
    if args.encoder_weights is not None:
        changes["encoder_weights"] = args.encoder_weights
    changes["crop_seed"] = args.crop_seed
    changes.update(parse_overrides(args.set))
    try:
        return cfg.replace(**changes), name
    except (ValueError, TypeError) as err:
        raise UsageError(str(err)) from None


def plan(args, device) -> tuple[CellConfig, str, list[tuple[str, str, CellConfig]]]:
    """Validate everything and list the jobs as (model, cell, config) — before any data is decoded."""
    if args.seeds < 1:
        raise UsageError(f"--seeds must be at least 1, got {args.seeds}")
    if args.heartbeat < 1:
        raise UsageError(f"--heartbeat must be at least 1 second, got {args.heartbeat}")
    grid = grids.get(args.grid)
    base, preset_name = base_config(args, device)
    model_names = args.models or [base.model]
    for m in model_names:
        models.get_factory(m)
    data_name = resolve(args.data, data_root(args.data_root))[0] if args.tuned else None
    jobs = []
    for m in model_names:
        for cell in grid.cells:
            changes = dict(cell.changes)
            if "loss_params" in changes:
                changes["loss_params"] = {**base.loss_params, **changes["loss_params"]}
            cfg = base.replace(model=m, **changes)
            if args.tuned:  # the best parameters of the (model, loss) tuning study replace the preset's ...
                from .tune import apply_params, load_best

                best = load_best(m, cfg.loss, preset_name, data_name, args.storage)["params"]
                own = set(cell.changes) | set(cell.changes.get("loss_params", {}))
                cfg = apply_params(cfg, {k: v for k, v in best.items() if k not in own})  # ... not the cell's own
            cfg.validate()
            for seed in range(args.seeds):
                jobs.append((m, cell.name, cfg.replace(seed=seed)))
    base.validate()
    check_encoder_weights(base, model_names, [cfg.loss for _, _, cfg in jobs])
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


class TakenOver(RuntimeError):
    """This worker's trial was failed as stale by another worker (its heartbeat was late): stop training it."""


def run_job(model_name, cell, cfg, prep, device, shared, progress, on_validation=None, run_dir: Path | None = None
            ) -> tuple[dict, list[dict], list[dict]]:
    """Train one (cell, seed); return its run row, per-image rows and history rows. Divergence → a failed row."""
    row = {**shared, "model": model_name, "cell": cell, **cfg.to_flat(), "started_at": _now()}
    row["style_weight"] = cfg.loss_params.get("style_weight", "")
    row["skips"] = cfg.model_params.get("skips", "")
    key = {"run": shared["run"], "model": model_name, "cell": cell, "seed": cfg.seed}
    try:
        res = train_cell(cfg, prep, device, progress=progress, desc=f"{cell} seed {cfg.seed}",
                         on_validation=on_validation)
    except DivergenceError as err:
        row.update(status="failed", failed_step=err.step, error=err.reason, finished_at=_now())
        return row, [], []
    row.update(res["metrics"], status="ok", encoder_pretrained=res["encoder_pretrained"], finished_at=_now())
    if run_dir is not None:  # colorized sample images for the report, while the network is still in memory
        save_samples(run_dir, model_name, cell, cfg.seed, prep, res["model"], device,
                     autocast_dtype=autocast_dtype(cfg, device))
    per_image = [{**key, "image": Path(f).name, **{k: v[i] for k, v in res["per_image"].items()}}
                 for i, f in enumerate(prep.test_files)]
    history = [{**key, **h} for h in res["history"]]
    return row, per_image, history


# ---------------------------------------------------------------------------------------------------------------------
# The grid as an Optuna study
# ---------------------------------------------------------------------------------------------------------------------

def key_str(model: str, cell: str, seed) -> str:
    return f"{model}/{cell}/{seed}"


def study_name_for(args, preset_name: str, jobs) -> str:
    """Deterministic: grid, preset, data and a hash of every job's configuration (a changed --steps is a new study)."""
    dname = resolve(args.data, data_root(args.data_root))[0]
    blob = json.dumps([[m, c, cfg.to_flat()] for m, c, cfg in jobs] + [args.data, args.test], sort_keys=True,
                      default=str)
    return f"ablate-{args.grid}-{preset_name}-{dname}-{hashlib.sha1(blob.encode()).hexdigest()[:8]}"


def open_grid_study(args, run_dir: Path, name: str) -> tuple[optuna.Study, str]:
    url = args.storage or str(run_dir / "study.journal")
    storage = gs.open_storage(url, heartbeat=args.heartbeat)
    try:
        study = optuna.create_study(study_name=name, storage=storage, direction="maximize", load_if_exists=True,
                                    sampler=optuna.samplers.RandomSampler(seed=0))
    except Exception as err:  # e.g. the database refuses the connection
        raise gs.StorageError(f"cannot open study {name} in {gs.redact(url)}: {type(err).__name__}: "
                              f"{str(err).strip().splitlines()[0] if str(err).strip() else ''}") from None
    return study, url


def _columns(rows: list[dict]) -> dict:
    """Rows → {column: [values]}: a compact user attribute."""
    names = list(dict.fromkeys(k for r in rows for k in r))
    return {k: [r.get(k) for r in rows] for k in names}


def _rows(cols: dict) -> list[dict]:
    n = max((len(v) for v in cols.values()), default=0)
    return [{k: v[i] for k, v in cols.items() if v[i] is not None} for i in range(n)]


def import_local_rows(study: optuna.Study, keys: dict, local_rows: list[dict]) -> int:
    """Runs recorded in this folder's runs.csv (e.g. by the pre-study runner) but unknown to the storage become
    finished trials, so that no worker trains them again and every worker's leaderboard shows them."""
    known = {gs.key_of(t) for t in study.get_trials(deepcopy=False)}
    n = 0
    for r in local_rows:
        k = key_str(r.get("model"), r.get("cell"), r.get("seed"))
        if k not in keys or k in known:
            continue
        attrs = {**keys[k], "key": k, "row": gs.dumps(r), "worker": "imported from runs.csv"}
        try:
            value = float(r.get("val_psnr", "nan"))
        except ValueError:
            value = math.nan
        if r.get("status") == "ok" and math.isfinite(value):
            t = optuna.trial.create_trial(state=TrialState.COMPLETE, value=value, user_attrs={**attrs, "outcome": "ok"})
        else:
            t = optuna.trial.create_trial(state=TrialState.FAIL, user_attrs={**attrs, "outcome": "diverged",
                                                                             "error": r.get("error", "")})
        study.add_trial(t)
        known.add(k)
        n += 1
    return n


def sync_records(study: optuna.Study, keys: dict, run_dir: Path, shared: dict | None) -> None:
    """Append every finished run in the storage (from any worker) to this folder's CSV files (no duplicates)."""
    runs, per_image, history = [], [], []
    for k, s in gs.key_states(study, keys).items():
        if k not in keys:
            continue
        done = (s.complete + s.diverged)[:1]
        if done:
            t = done[0]
            if "row" not in t.user_attrs:
                continue
            runs.append(json.loads(t.user_attrs["row"]))
            per_image += _rows(json.loads(t.user_attrs.get("per_image", "{}")))
            history += _rows(json.loads(t.user_attrs.get("history", "{}")))
        elif s.finished:  # given up after repeated crashes
            last = s.crashes[-1]
            runs.append({**(shared or {"run": run_dir.name}), **keys[k], "status": "failed",
                         "error": f"worker lost {len(s.crashes)} times (no heartbeat or error: "
                                  f"{last.user_attrs.get('error', 'killed')})", "finished_at": _now()})
    append_rows(run_dir / "per_image.csv", per_image, key=("model", "cell", "seed", "image"))
    append_rows(run_dir / "history.csv", history, key=("model", "cell", "seed", "step"))
    append_rows(run_dir / "runs.csv", runs, key=RUN_KEY)


def _hang_hook():
    step = os.environ.get("COLORBENCH_TEST_HANG_AT_STEP")
    return int(step) if step else None


def train_trial(study, trial, job, prep, device, shared, args, run_dir) -> str:
    """Train a claimed trial and record it; returns its outcome (ok, diverged, duplicate, taken over)."""
    model_name, cell, cfg = job
    dup = gs.is_duplicate(study, trial)
    if dup is not None:  # two workers enqueued the same key at once: the lower-numbered trial trains
        gs.close(study, trial, TrialState.FAIL, outcome="duplicate", duplicate_of=dup)
        return "duplicate"
    hang = _hang_hook()

    def on_validation(step, val_psnr):
        try:
            trial.report(val_psnr, step)  # intermediate values: visible in optuna-dashboard
        except optuna.exceptions.UpdateFinishedTrialError:
            raise TakenOver() from None
        if hang is not None and step >= hang:
            time.sleep(3600)

    trial.set_user_attr("worker", f"{shared['hostname']}:{os.getpid()}")
    try:
        with gs.keep_alive(study, trial._trial_id):
            row, per_image, history = run_job(model_name, cell, cfg, prep, device, shared, not args.no_progress,
                                              on_validation, run_dir=run_dir)
    except TakenOver:
        return "taken over"
    except KeyboardInterrupt:
        gs.close(study, trial, TrialState.FAIL, outcome="interrupted")
        raise
    except Exception as err:  # not a divergence: fail the trial (retried later), and stop this worker loudly
        gs.close(study, trial, TrialState.FAIL, outcome="error", error=f"{type(err).__name__}: {err}"[:500])
        raise
    attrs = {"row": gs.dumps(row), "per_image": gs.dumps(_columns(per_image)), "history": gs.dumps(_columns(history))}
    if row["status"] == "ok" and math.isfinite(row["val_psnr"]):
        told = gs.close(study, trial, TrialState.COMPLETE, row["val_psnr"], outcome="ok", **attrs)
    else:
        told = gs.close(study, trial, TrialState.FAIL, outcome="diverged", error=str(row.get("error", "")), **attrs)
    if not told:  # another worker failed it as stale and will train it again: keep no record of this one
        return "taken over"
    # per-image and history rows first: a run counts as done only once its runs.csv row exists
    append_rows(run_dir / "per_image.csv", per_image, key=("model", "cell", "seed", "image"))
    append_rows(run_dir / "history.csv", history, key=("model", "cell", "seed", "step"))
    append_rows(run_dir / "runs.csv", [row], key=RUN_KEY)
    if row["status"] != "ok":
        tqdm.write(f"{model_name}/{cell} seed {cfg.seed} failed at step {row['failed_step']}: {row['error']}")
        return "diverged"
    return "ok"


def main(argv=None) -> int:
    args = parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
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
        local_rows = read_rows(run_dir / "runs.csv")
        name = args.study_name or study_name_for(args, preset_name, jobs)
        study, url = open_grid_study(args, run_dir, name)
        by_key = {key_str(m, c, cfg.seed): (m, c, cfg) for m, c, cfg in jobs}
        keys = {k: {"model": m, "cell": c, "seed": cfg.seed} for k, (m, c, cfg) in by_key.items()}
        import_local_rows(study, keys, local_rows)
        counts = gs.enqueue_keys(study, keys)
    except (ValueError, DataError, CorruptRecordError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    grey_done = any(r.get("cell") == leaderboard.GREY for r in local_rows)
    print(f"{args.grid}: {len(jobs)} runs ({counts['finished']} already done, {counts['running']} running elsewhere)"
          f" → {run_dir}\nstudy {name} in {gs.redact(url)}", file=sys.stderr)
    if counts["stale"]:
        print(f"{counts['stale']} stale trial(s) of a lost worker failed; their runs are queued again", file=sys.stderr)
    t0, trained = time.perf_counter(), 0
    shared = None
    if counts["finished"] < len(keys) or not grey_done:
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
            "study": name, "storage": gs.redact(url), "tuned": args.tuned,
            "splits": {k: [str(p) for p in getattr(prep.splits, k)] for k in ("train", "val", "test")},
            "skipped": prep.skipped, "environment": env, "written_at": _now()}, indent=2))
        try:
            if not grey_done:
                row, per_image = grey_row(prep, shared, device)
                append_rows(run_dir / "per_image.csv", per_image, key=("model", "cell", "seed", "image"))
                append_rows(run_dir / "runs.csv", [row], key=RUN_KEY)
            trained = work(study, keys, by_key, prep, device, shared, args, run_dir, counts["finished"])
        except KeyboardInterrupt:
            print(f"\ninterrupted: finished runs are saved in {run_dir}; run the same command again to resume.",
                  file=sys.stderr)
            return 130
    sync_records(study, keys, run_dir, shared)
    _, md = leaderboard.write(run_dir)
    print(md)
    if trained:
        print(f"{trained} runs trained by this worker in {time.perf_counter() - t0:.0f} s; results in {run_dir}",
              file=sys.stderr)
    return 0


def work(study, keys, by_key, prep, device, shared, args, run_dir, finished: int) -> int:
    """Claim and train waiting trials until every key is finished; wait for (or take over) other workers' runs."""
    bar = tqdm(total=len(keys), initial=finished, desc=f"grid {args.grid}", disable=args.no_progress,
               dynamic_ncols=True)
    trained, waiting_said = 0, False
    try:
        while True:
            trial = gs.claim(study, keys)
            if trial is None:
                counts = gs.enqueue_keys(study, keys)  # fails stale trials and queues their keys again
                bar.n = counts["finished"]
                bar.refresh()
                if counts["stale"]:
                    tqdm.write(f"{counts['stale']} stale trial(s) of a lost worker failed; queued again")
                if counts["finished"] == len(keys):
                    return trained
                if not counts["waiting"]:
                    if not waiting_said:
                        tqdm.write(f"waiting for {counts['running']} run(s) on other workers ...")
                        waiting_said = True
                    time.sleep(args.heartbeat)
                continue
            waiting_said = False
            key = gs.key_of(trial)
            outcome = train_trial(study, trial, by_key[key], prep, device, shared, args, run_dir)
            if outcome in ("ok", "diverged"):
                trained += 1
                bar.update(1)
            elif outcome == "taken over":
                tqdm.write(f"{key}: trial {trial.number} was failed as stale by another worker; result discarded")
    finally:
        bar.close()


if __name__ == "__main__":
    sys.exit(main())
