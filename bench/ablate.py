"""Train every cell of a named grid over several seeds, record every run, and print the PSNR leaderboard.

    colorbench ablate --grid losses                     # quick preset on the bundled Kodak24, CPU-sized
    colorbench ablate --grid losses --dry-run           # list the jobs and the configuration hash; train nothing
    colorbench ablate --grid losses --preset paper --data imagenet-sample --data-root ../shared/data
    colorbench ablate --grid losses --storage postgresql+psycopg://user@db-host/optuna   # on every machine
    colorbench ablate --list-grids

Each (model, cell, seed) is one trial of an Optuna study (``bench.grid.study``) stored in ``<run folder>/study.journal``
or in ``--storage``: start the same command on several processes or machines and they split the grid, each run
trained exactly once. Results go to ``./results/<grid>-<preset>-<data>-<config hash>/`` (or ``--out``): ``runs.csv`` (one row per
cell × seed: config, metrics, timings, environment), ``per_image.csv``, ``history.csv``, ``leaderboard.md``/``.csv``
and ``figures/psnr.png``; the leaderboard is built from every worker's results in the storage. Re-running the same command
resumes: finished (cell, seed) pairs are not trained again, and runs of a worker that died (no heartbeat for
``3 × --heartbeat`` seconds) are trained again. The engine itself is ``bench.grid.engine.GridRun``.

    torchrun --nproc_per_node 2 -m bench.ablate --grid losses    # each run data-parallel on 2 GPUs (or CPU ranks)

Under torchrun the processes of one group train each run together (``bench.training.distributed``): ``batch_size`` is
the global batch, split evenly between them; rank 0 claims the runs and writes every file.
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench import cli
from bench.config import grids
from bench.core.log import attach_run_log, get_logger
from bench.core.records import CONFIG_COPY

log = get_logger(__name__)

if TYPE_CHECKING:
    from bench.config.cell import CellConfig

# torch, Optuna and the engine are imported after the command line is parsed: --help stays fast

def parse_args(argv=None):
    p = cli.parser("ablate", __doc__)
    p.add_argument("--grid", default="losses", help="named grid (see --list-grids); default: losses")
    p.add_argument("--list-grids", action="store_true", help="list the named grids and their cells, then exit")
    cli.add(p, "models")
    p.add_argument("--seeds", type=cli.bounded_int(1, cli.MAX_SEEDS), default=None,
                   help=f"training seeds per cell (default 2, the controls grids 3; at most {cli.MAX_SEEDS})")
    p.add_argument("--test", default=None, help="held-out test set (named or folder); default: the data set's own")
    p.add_argument("--folds", type=cli.bounded_int(1, cli.MAX_FOLDS), default=None, metavar="K",
                   help="k-fold rotation of a data set without a separate test set: K runs per cell and seed, each "
                        "testing on its own 1/K of the images, so that every image is a test image once "
                        "(default: the bundled Kodak24 is rotated in folds, see the README's Data section; other sets: "
                        "1 = one fixed split)")
    cli.add(p, "out", help="run folder (default: results/<grid>-<preset>-<data>-<config hash> under the current "
                           "folder, or under $COLORBENCH_RESULTS)")
    cli.add(p, "lr", "rank_by")
    p.add_argument("--dry-run", action="store_true",
                   help="list the jobs (model, cell, seed, fold), the configuration hash and the run folder, then "
                        "exit: nothing is trained or created")
    p.add_argument("--save-models", choices=("all", "none"), default="all",
                   help="save every finished run's weights and configuration in <run folder>/models/ (default all)")
    g = p.add_argument_group("shared study (several workers, one grid)")
    cli.add(g, "storage", "study_name", "heartbeat", "workers", "gpus")
    g.add_argument("--tuned", action="store_true",
                   help="train each cell with the best lr (and style weight) of its bench.tune study")
    cli.add_training_arguments(p)
    return grid_defaults(p.parse_args(argv))


def grid_defaults(args):
    """Fill the options the command line left out from the named grid's defaults (``bench.config.grids.Grid.defaults``:
    the controls grid brings its data, preset and seeds), then from the command's (2 seeds)."""
    grid = grids.GRIDS.get(args.grid)
    for key, value in (grid.defaults if grid else {}).items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    if args.seeds is None:
        args.seeds = 2
    return args


def folds_of(args) -> int:
    """``--folds``, else the data set's default (``bench.data.sources.default_folds``); folds need a data set that has
    no separate test set."""
    from bench.data.sources import DEFAULT_TEST, data_root, default_folds, list_images, resolve

    if args.folds is None:
        return default_folds(args.data, args.test, args.data_root)
    if args.folds < 1:
        raise cli.UsageError(f"--folds must be at least 1, got {args.folds}")
    if args.folds > 1 and (args.test is not None or args.data in DEFAULT_TEST):
        test = args.test or DEFAULT_TEST[args.data]
        raise cli.UsageError(f"--folds rotates the test split of one data set, but the test set here is {test}, "
                             f"a separate one: leave --folds out")
    if args.folds > 1:  # checked before the run folder and the study exist (unusable files are found later)
        n = len(list_images(resolve(args.data, data_root(args.data_root))[1]))
        if args.folds > n:
            raise cli.UsageError(f"--folds must be at most the number of images ({n}), got {args.folds}")
    return args.folds


def plan(args, device):
    """The base configuration, preset name and jobs of a command line — validated before any data is decoded."""
    from bench.data.sources import data_root, resolve
    from bench.grid.plan import plan_jobs
    from bench.grid.tuned import load_best

    base, preset_name = cli.config_from_args(args, device)
    with cli.usage_errors():
        args.folds = folds_of(args)
        grid = find_grid(args)
        best = None
        if args.tuned:  # the best parameters of each (model, loss) tuning study
            dname = resolve(args.data, data_root(args.data_root))[0]
            best = lambda m, loss: load_best(m, loss, preset_name, dname, args.storage)["params"]  # noqa: E731
        jobs = plan_jobs(grid, base, cli.pick_models(args) or [base.model], args.seeds, best, args.folds)
        check_distributed(jobs)
    return base, preset_name, jobs


def check_distributed(jobs) -> None:
    """Under torchrun, refuse what data-parallel training cannot reproduce (``bench.training.distributed``): a global
    batch that does not split evenly, and a loss that trains a network of its own (``extra_step``, e.g. a GAN
    critic)."""
    import losses

    from bench.training.distributed import world_size

    n = world_size()
    if n == 1:
        return
    for j in jobs:
        if j.cfg.batch_size % n:
            raise ValueError(f"batch_size {j.cfg.batch_size} (the global batch of {j.cell}) is not a multiple of the "
                             f"{n} torchrun processes that split it: pass --set batch_size=<a multiple of {n}>")
        own = [name for _, name in losses.parse_spec(j.cfg.loss) if hasattr(losses.get_class(name), "extra_step")]
        if own:
            raise ValueError(f"cell {j.cell}: loss {j.cfg.loss} trains its own network ({own[0]}'s critic) on each "
                             f"process's shard, which DistributedDataParallel does not average: run it without "
                             f"torchrun")


def find_grid(args) -> grids.Grid:
    """The ``--grid``: one defined in the ``--config`` file, else a named grid of ``bench.config.grids``."""
    cf = cli.config_file(args)
    if cf and args.grid in cf.grids:
        return cf.grids[args.grid]
    try:
        return grids.get(args.grid)
    except ValueError:
        if cf and cf.grids:
            raise ValueError(f"unknown grid {args.grid!r}; {cf.path} defines {', '.join(cf.grids)}; colorbench has "
                             f"{', '.join(sorted(grids.GRIDS))}") from None
        raise


def list_grids(args) -> None:
    cf = cli.config_file(args)
    import textwrap

    for g in [*grids.GRIDS.values(), *(cf.grids.values() if cf else ())]:  # wrapped at 100 columns
        print(textwrap.fill(f"{g.name}: {g.description}", cli.TERMINAL_WIDTH, subsequent_indent="  "))
        for c in g.cells:
            print(textwrap.fill(json.dumps(c.changes), cli.TERMINAL_WIDTH, initial_indent=f"    {c.name:<14} ",
                                subsequent_indent=" " * 8, break_long_words=False, break_on_hyphens=False))


def dry_run(req: AblateRequest) -> str:
    """What ``--dry-run`` prints: the configuration hash, the run folder and one line per job."""
    from bench.grid.plan import config_hash

    rows = [("model", "cell", "seed", "fold")] + [(j.model, j.cell, str(j.cfg.seed), "" if j.fold is None
                                                   else str(j.fold)) for j in req.jobs]
    widths = [min(40, max(len(r[i]) for r in rows)) for i in range(4)]
    lines = [f"dry run: {len(req.jobs)} job(s) of grid {req.grid.name}, configuration hash "
             f"{config_hash(list(req.jobs), req.data, req.test, req.data_root)}, run folder {req.run_dir} (nothing "
             f"trained or created)"]
    lines += ["  ".join(c[:w].ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join(lines)


def resumed_note(steps_here: list[tuple[int, int, bool]]) -> str:
    """What the closing line says of runs that went on from a checkpoint: this worker trained only their rest."""
    resumed = [(here, total) for here, total, was in steps_here if was]
    if not resumed:
        return ""
    here, total = sum(h for h, _ in resumed), sum(t for _, t in resumed)
    return (f" ({len(resumed)} of them resumed from a checkpoint: {here} of their {total} steps trained here, the "
            f"rest by an earlier worker)")


def open_run(req: AblateRequest, device):
    """The ``GridRun`` of a request, its folder and study open: everything that can be refused is checked before
    the folder, the study or any trial exists (then the data are decoded first, and their warnings printed); the
    command is recorded in the folder. None in a torchrun rank > 0, once it has followed rank 0.

    Args:
        req: the resolved command line.
        device: where this process trains (a launcher checks the data on the CPU: it trains nothing).
    """
    from bench.core.records import record_command
    from bench.grid.engine import GridRun
    from bench.training import distributed

    with cli.usage_errors():
        run = GridRun(req.grid.name, req.preset, req.base, list(req.jobs), req.run_dir, device, data=req.data,
                      test=req.test, data_root=req.data_root, storage=req.storage, study_name=req.study_name,
                      heartbeat=req.heartbeat, progress=req.progress, verify=req.verify, save_models=req.save_models,
                      folds=req.folds, rank_by=req.rank_by, cache_mb=req.cache_mb, loader_workers=req.loader_workers,
                      trackers=req.trackers, info=run_info(req))
        if not distributed.is_main():  # a torchrun rank > 0: the data, then rank 0's jobs; it writes nothing
            run.load_data()
            run.follow()
            return None
        run.check_folder()
        if run.needs_data:
            for w in run.load_data():
                log.warning(w)
        run.open()
        attach_run_log(run.run_dir)
        log.debug(f"command: {run.info['command']}")
        record_command(run.run_dir, run.info["command"])
        if req.config:  # the YAML file that defined the grid, beside the results it made (shown by the report)
            from bench.core.records import atomic_write_bytes

            atomic_write_bytes(run.run_dir / CONFIG_COPY, Path(req.config).expanduser().read_bytes())
    return run


def run_info(req: AblateRequest) -> dict:
    """What ``run.json`` records of the command line besides the configuration: the command, seeds, cells, jobs."""
    return {"command": req.command, "seeds": req.seeds, "tuned": req.tuned,
            **({"log": list(req.trackers)} if req.trackers else {}),
            "cells": {c.name: c.changes for c in req.grid.cells},
            "models": list(dict.fromkeys(j.model for j in req.jobs)), "jobs": [j.key for j in req.jobs],
            **({"config_file": {"path": str(req.config), "copy": CONFIG_COPY}} if req.config else {})}


def launch(req: AblateRequest, run, count: int) -> int:
    """``--workers``/``--gpus``: start ``count`` workers of this command on the open run's study
    (``bench.grid.workers``), wait for them (Ctrl-C and SIGTERM are forwarded), then ``workers_done``. Returns the exit
    code: 1 when a worker failed."""
    from tqdm.auto import tqdm

    from bench.grid import study as gs
    from bench.grid import workers as wk
    from bench.metrics.compute import release_networks

    left = max(1, len(run.keys) - run.counts["finished"])  # 1: only the untrained rows are missing
    if left < count:  # more workers would only wait for the others
        log.info(f"{left} run(s) left to train: starting {left} worker(s), not {count}")
        count = left
    gpus = list(req.gpus[:count]) if req.gpus else None
    cores = wk.usable_cores()
    envs = [wk.worker_env(os.environ, i, count, cores, gpus) for i in range(count)]
    logs = [wk.log_path(run.run_dir, i + 1) for i in range(count)]
    threads = envs[0]["OMP_NUM_THREADS"]
    log.info(f"starting {count} worker(s) of {threads} thread(s) each on {cores} core(s)"
             + (f", one per GPU {','.join(gpus)}" if gpus else "")
             + f"; their logs: {logs[0].parent}/worker-<i>.log")
    # the launcher trains nothing: its decoded data and the metric networks it checked need not stay in memory
    run.preps = []
    release_networks()
    bar = tqdm(total=len(run.keys), initial=run.counts["finished"], desc=f"grid {run.grid} ({count} workers)",
               disable=not req.progress, dynamic_ncols=True)

    def tick():
        with contextlib.suppress(Exception):  # only a display: a storage hiccup here must not stop the workers
            bar.n = sum(s.finished for k, s in gs.key_states(run.study, run.keys).items() if k in run.keys)
            bar.refresh()

    t0 = time.perf_counter()
    started = wk.start([wk.worker_command(list(req.argv), gpus)] * count, envs, logs)
    try:
        got = wk.wait(started, tick=tick)
    finally:
        wk.stop(started)  # none is left behind, whatever happened here
        bar.close()
    if got is not None:
        raise cli.Interrupted(f"the workers were stopped; finished runs are saved in {run.run_dir}; run the same "
                              f"command again to resume.")
    return workers_done(run, started, time.perf_counter() - t0)


def report_line(run_dir) -> str:
    """The closing pointer to the run's report: the one command that writes ``report.html`` into the run folder."""
    return f"\nReport: colorbench report {run_dir}   (writes {Path(run_dir) / 'report.html'})"


def workers_done(run, started: list, seconds: float) -> int:
    """After ``launch``'s workers have ended: report the failed ones (exit code, log tail), print the leaderboard
    once and the closing line. Returns the exit code: 1 when a worker failed."""
    from bench.grid import workers as wk

    count = len(started)
    failed = [w for w in started if w.returncode != 0]
    for w in failed:
        print(wk.failure_report(w, count), file=sys.stderr)
    try:
        print(run.finish())
        print(report_line(run.run_dir))
    except cli.INPUT_ERRORS as err:  # e.g. no run recorded at all: the failures above are the news
        if not failed:
            raise
        log.info(f"no leaderboard: {err}")
    per_worker = [wk.trained_by(w.log) for w in started]
    log.info(f"{sum(per_worker)} run(s) trained by {count} workers ({' + '.join(map(str, per_worker))}) in "
             f"{seconds:.0f} s; results in {run.run_dir}")
    if failed:
        print(f"error: {len(failed)} of {count} workers failed (their logs above); run the same command again to "
              f"train what is missing", file=sys.stderr)
        return 1
    return 0


@dataclass(frozen=True)
class AblateRequest:
    """What one ``ablate`` command line asks for, resolved and checked (:func:`request_from_args`): the one input of
    :func:`execute`.

    Attributes:
        grid: the grid (a named one, or the ``--config`` file's).
        preset: the preset's name; ``base`` the base configuration (preset, file, options, ``--set``).
        jobs: the plan (model × cell × seed × fold, ``bench.grid.plan.plan_jobs``).
        run_dir: the run folder.
        device: where this process trains (under torchrun: its rank's).
        workers: ``--workers``/``--gpus``: how many worker processes to start (None: train in this process).
        argv: the arguments as given (recorded, and passed on to the workers); ``command`` the command recorded.
        The other fields are the options of the same names.
    """

    grid: grids.Grid
    preset: str
    base: CellConfig
    jobs: tuple
    run_dir: Path
    device: Any
    workers: int | None
    gpus: tuple[str, ...] | None
    argv: tuple[str, ...]
    command: str
    dry_run: bool
    data: str | None
    test: str | None
    data_root: str | None
    storage: str | None
    study_name: str | None
    heartbeat: int
    progress: bool
    verify: bool
    save_models: bool
    folds: int
    seeds: int
    rank_by: str
    cache_mb: int | None
    loader_workers: int | None
    trackers: tuple[str, ...]
    tuned: bool
    config: str | None


@cli.command
def main(argv=None) -> int:
    from bench.grid import workers as wk

    wk.follow_launcher()  # a worker of --workers stops with its launcher
    args = parse_args(argv)
    if args.list_grids:
        list_grids(args)
        return 0
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return execute(request_from_args(args, cli.arguments(argv)))


def request_from_args(args, argv: list[str]) -> AblateRequest:
    """Resolve a parsed command line into its request: trackers, workers, device, plan and run folder, every check
    that needs no folder made (``cli.UsageError`` otherwise)."""
    trackers = cli.trackers(args)  # a backend that is not installed: one line, before any folder
    from bench.core.device import pick_device
    from bench.core.records import command_line
    from bench.grid import workers as wk
    from bench.grid.plan import default_run_dir
    from bench.training import distributed

    with cli.usage_errors():
        count = wk.worker_count(args.workers, args.gpus)
        wk.check_gpu_device(args.gpus, args.device)
        if count is not None and distributed.world_size() > 1:
            raise cli.UsageError("--workers and --gpus start workers of their own: leave them out under torchrun")
        device = distributed.init(pick_device(args.device))  # under torchrun: join its group (this rank's GPU)
        if args.gpus and device.type != "cuda":
            raise cli.UsageError(f"--gpus {','.join(args.gpus)} gives each worker a GPU, but this machine has no "
                                 f"CUDA device; use --workers N")
        base, preset_name, jobs = plan(args, device)
        run_dir = cli.out_dir(args.out) or default_run_dir(args.grid, preset_name, args.data, args.data_root, jobs,
                                                           args.test)
        grid = find_grid(args)
    return AblateRequest(
        grid=grid, preset=preset_name, base=base, jobs=tuple(jobs), run_dir=run_dir, device=device, workers=count,
        gpus=tuple(args.gpus) if args.gpus else None, argv=tuple(argv), command=command_line(cli.prog("ablate"), argv),
        dry_run=args.dry_run, data=args.data, test=args.test, data_root=args.data_root, storage=args.storage,
        study_name=args.study_name, heartbeat=args.heartbeat, progress=not args.no_progress, verify=not args.no_verify,
        save_models=args.save_models == "all", folds=args.folds, seeds=args.seeds, rank_by=args.rank_by,
        cache_mb=args.cache_mb, loader_workers=args.loader_workers, trackers=tuple(trackers), tuned=args.tuned,
        config=args.config)


def execute(req: AblateRequest) -> int:
    """Run a request: the dry run's listing, or open the run and train it (here, or in ``req.workers`` workers)."""
    import torch

    from bench.grid import study as gs
    from bench.grid import workers as wk
    from bench.training import distributed

    if req.dry_run:
        from bench.core.records import check_writable

        with cli.usage_errors():
            check_writable(req.run_dir)  # a dry run names a folder the real run could write (creates nothing)
        if distributed.is_main():
            print(dry_run(req))
        return 0
    if req.workers is None:
        run = open_run(req, req.device)
    else:  # a launcher trains nothing: it checks the data on the CPU, decoding them once for its workers
        with wk.shared_decoding():
            run = open_run(req, torch.device("cpu"))
    if run is None:  # a torchrun rank > 0: it followed rank 0's runs
        return 0
    counts = run.counts
    folds = f", {req.folds} folds" if req.folds > 1 else ""
    log.info(f"{req.grid.name}: {len(req.jobs)} runs ({req.seeds} seed(s){folds}; {counts['finished']} already done, "
             f"{counts['running']} running elsewhere) → {run.run_dir}\nstudy {run.study_name} in {gs.redact(run.url)}")
    if counts["stale"]:
        log.info(f"{counts['stale']} stale trial(s) of a lost worker failed; their runs are queued again")
    if req.workers is not None and run.needs_training:
        return launch(req, run, req.workers)
    return train_here(run)


def train_here(run) -> int:
    """Train this worker's share of the open run, then print the leaderboard (of every worker's results)."""
    from bench.data.sources import DataError

    t0, trained = time.perf_counter(), 0
    if run.needs_training:
        if run.prep is None:  # this folder's records were complete, but the study wants more (another worker's)
            with cli.usage_errors():
                for w in run.prepare():
                    log.warning(w)
        try:
            with cli.usage_errors(DataError):  # a streamed set's content check ends its first run (bench.training.loop)
                trained = run.train()
        except KeyboardInterrupt:
            raise cli.Interrupted(f"finished runs are saved in {run.run_dir}; run the same command again to "
                                  f"resume.") from None
    run.release()  # under torchrun: the other ranks stop following
    print(run.finish())
    print(report_line(run.run_dir))
    if trained:
        log.info(f"{trained} run{'s' if trained != 1 else ''} trained by this worker in {time.perf_counter() - t0:.0f} s"
                 f"{resumed_note(run.steps_here)}; results in {run.run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
