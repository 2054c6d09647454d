"""The grid engine: runs a plan's jobs through an Optuna study that several workers share, and keeps the run folder's
records up to date.

``GridRun`` orchestrates the parts, each in its own module: the plan (``bench.grid.plan``: jobs, configuration hashes),
the run folder's records (``bench.grid.runfolder``: identity, ``run.json``, CSV files ↔ study) and the training of one
job (``bench.grid.jobrun``). No argument parsing here: ``bench.ablate`` turns a command line into a ``GridRun`` and
calls, in order, ``check_folder`` and ``open`` (folder and study, before any data is decoded unless the folder needs
them), ``prepare`` (data), ``train`` and ``finish`` (leaderboard).
Each (model, cell, seed) is one trial of an Optuna study (``bench.grid.study``): several workers running the same plan
split it, and every run is trained once. With k-fold rotation (``folds`` ≥ 2, the default for the bundled Kodak24)
each (model, cell, seed, fold) is a run: fold f trains on its own training images and tests on its own test images,
and the folds' test images together are every image of the set once, so per-image results of one (model, cell,
seed) from different folds cover different images of one test set.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import optuna
import torch
from optuna.trial import TrialState
from tqdm.auto import tqdm

from bench.training import distributed
from bench.reporting import testsets
from bench.metrics import stats as pstats
from bench.grid import study as gs
from bench.config.cell import CellConfig
from bench.data.sources import data_root, resolve
from bench.grid.jobrun import JobTrainer, mean_abs, split_sizes, untrained_rows
from bench.metrics.compute import inception_metric, lpips_metric
from bench.core.paths import check_writable
from bench.grid.optuna_compat import UpdateFinishedTrialError
from bench.grid.plan import DATA_COLUMNS, Job, config_columns, config_differences, describe, key_str
from bench.core.records import BASELINES, environment
from bench.grid.runfolder import (
    append_run, bind, data_fingerprint, import_local_rows, read_local_rows, recorded_base_config, sync_records,
    test_means, trial_records, unbind, write_run_json)
from bench.training.loop import Prepared, prepare, prepare_folds
from bench.core.log import get_logger

log = get_logger(__name__)


class TakenOver(RuntimeError):
    """This worker's trial was failed as stale by another worker (its heartbeat was late): stop training it."""


@dataclass
class GridRun:
    """One grid run: what to train (``jobs``), where to record it (``run_dir``), and the study that workers share.

    Attributes:
        grid: the grid's name (folder, study and record names).
        preset: the preset's name.
        base: the base configuration (preset + overrides), recorded in ``run.json``.
        jobs: the plan (``plan_jobs``).
        run_dir: the run folder (CSV files, ``run.json``, leaderboard, samples, default journal).
        device: where to train.
        data, test, data_root: the data sets (see ``bench.data.sources.resolve``).
        storage: Optuna storage URL shared by the workers (default: ``run_dir/study.journal``).
        study_name: the study's name (default: derived from grid, preset, data and every job's configuration).
        heartbeat: seconds between heartbeats of a running trial (stale after 3×).
        progress: show progress bars.
        verify: check the SHA256 manifests of named data sets.
        save_models: save every finished run's weights and configuration in ``run_dir/models/``
            (``bench.training.checkpoint``).
        info: more entries for ``run.json`` (the command line, seeds, ...).
        folds: 1 (one split) or the number of folds of the k-fold rotation (``bench.data.sources.fold_splits``); the
            jobs must carry their fold then (``plan_jobs(..., folds=)``).
        rank_by: the leaderboard's ranking metric, a metric of ``bench.metrics.stats.METRICS`` (psnr, ssim,
            colourfulness, delta_e2000, lpips, ...; its direction comes from there). Recorded in ``run.json`` for the
            report.
    """

    grid: str
    preset: str
    base: CellConfig
    jobs: list[Job]
    run_dir: Path
    device: torch.device
    data: str | None = None
    test: str | None = None
    data_root: str | None = None
    storage: str | None = None
    study_name: str | None = None
    heartbeat: int = 30
    progress: bool = True
    verify: bool = True
    save_models: bool = True
    info: dict = field(default_factory=dict)
    folds: int = 1
    rank_by: str = "psnr"
    cache_mb: int | None = None  # RAM budget of the decoded training set (None: bench.data.loader's default)
    loader_workers: int | None = None  # DataLoader workers of a streamed training set
    trackers: tuple[str, ...] = ()  # experiment-tracking backends (--log, bench.core.tracking): no part of the results
    # set by open() and prepare()
    study: optuna.Study | None = field(default=None, init=False, repr=False)
    counts: dict = field(default_factory=dict, init=False)
    preps: list[Prepared] = field(default_factory=list, init=False, repr=False)  # one per fold (one without folds)
    shared: dict | None = field(default=None, init=False, repr=False)
    trainer: JobTrainer | None = field(default=None, init=False, repr=False)  # set by load_data()

    def __post_init__(self):
        self.by_key = {j.key: j for j in self.jobs}
        self.keys = {k: {"model": j.model, "cell": j.cell, "seed": j.cfg.seed,
                         **({} if j.fold is None else {"fold": j.fold})} for k, j in self.by_key.items()}
        self.url = self.storage or str(self.run_dir / "study.journal")
        self.distributions = gs.key_distributions(self.keys)  # model, cell, seed as trial parameters
        self.artifacts = None  # sample images as Optuna artifacts (set by open)
        if self.heartbeat < 1:
            raise ValueError(f"--heartbeat must be at least 1 second, got {self.heartbeat}")
        if any((j.fold is not None) != (self.folds > 1) for j in self.jobs):
            raise ValueError(f"the jobs were planned for another number of folds than {self.folds}")
        if self.rank_by not in pstats.METRICS:
            raise ValueError(f"--rank-by must be one of {', '.join(pstats.METRICS)}, not {self.rank_by!r}")

    @property
    def prep(self) -> Prepared | None:
        """The decoded data of a run without folds (of fold 0 with folds)."""
        return self.preps[0] if self.preps else None

    def prep_of(self, job: Job) -> Prepared:
        """The decoded data a job trains and is scored on: its fold's."""
        return self.preps[job.fold or 0]

    # ------------------------------------------------------------------------------------------------ set-up
    def default_study_name(self) -> str:
        """Deterministic: grid, preset, data and a hash of every job's configuration (a changed --steps is a new
        study)."""
        dname = resolve(self.data, data_root(self.data_root))[0]
        blob = json.dumps([[j.model, j.cell, j.cfg.to_flat()] + ([] if j.fold is None else [j.fold])
                           for j in self.jobs] + [self.data, self.test], sort_keys=True, default=str)
        return f"ablate-{self.grid}-{self.preset}-{dname}-{hashlib.sha1(blob.encode()).hexdigest()[:8]}"

    def check_folder(self) -> None:
        """Read and validate the run folder's records, and refuse a folder that holds another configuration's
        results. Creates nothing (the folder may not exist yet).

        A row is reused only when its full configuration (every ``CellConfig`` field, and the data) equals its
        job's; ``run.json``'s base configuration must equal this run's.

        Raises:
            CorruptRecordError: a damaged ``runs.csv``, ``per_image.csv``, ``history.csv`` or ``run.json``.
            ValueError: the folder belongs to another configuration (the message names the differing keys).
        """
        self.local_rows = read_local_rows(self.run_dir)
        new = {k: v for k, v in self.base.to_flat().items() if k in config_columns()}
        diff = config_differences(recorded_base_config(self.run_dir), None, new)
        for r in self.local_rows:
            job = self.by_key.get(key_str(r.get("model"), r.get("cell"), r.get("seed"), r.get("fold")))
            if job is not None:
                diff.update(config_differences(r, job, self.data_names()))
        if diff:
            raise ValueError(f"run folder {self.run_dir} holds results of another configuration ({describe(diff)}); "
                             f"pass another --out, or leave --out out: the default folder follows the configuration")

    def data_names(self) -> dict:
        """The names under which rows record their data (``data_train``, ``data_test``)."""
        if self.prep is not None:
            return dict(zip(DATA_COLUMNS, (self.prep.splits.names["train"], self.prep.splits.names["test"])))
        return {}

    @property
    def needs_data(self) -> bool:
        """Before ``open``: whether this folder's records lack a job or the grey baseline (then the data are
        decoded, and checked, before any folder or study is created)."""
        done = {key_str(r.get("model"), r.get("cell"), r.get("seed"), r.get("fold")) for r in self.local_rows}
        return not self.baselines_done or any(k not in done for k in self.keys)

    def open(self) -> dict:
        """Create the run folder, open (or join) the study, import runs recorded only in ``runs.csv``, and enqueue
        every unfinished key. Returns the counts of ``bench.grid.study.enqueue_keys``.

        Raises:
            ValueError, DataError, CorruptRecordError: bad folder, storage or records (one-line messages).
        """
        if not hasattr(self, "local_rows"):
            self.check_folder()
        missing = self.run_dir  # the outermost folder that this call creates (removed again if the storage fails)
        while not missing.parent.exists() and missing.parent != missing:
            missing = missing.parent
        created = not missing.exists()
        check_writable(self.run_dir)
        try:
            bound = self.bind_folder()
            self.study_name = self.study_name or self.default_study_name()
            self.study = gs.open_study(self.study_name, self.url, self.heartbeat,
                                       optuna.samplers.RandomSampler(seed=0))
        except gs.StorageError:
            if created:  # leave no empty --out behind: only what this call wrote, and only empty folders
                if bound:
                    unbind(self.run_dir)
                folder = self.run_dir
                while True:
                    try:
                        folder.rmdir()
                    except OSError:
                        break
                    if folder == missing:
                        break
                    folder = folder.parent
            raise
        self.check_study()
        gs.describe(self.study, grid=self.grid, preset=self.preset,
                    data=resolve(self.data, data_root(self.data_root))[0], test=self.test or "(the data set's own)",
                    configuration=self.base.to_flat(), models=list(dict.fromkeys(j.model for j in self.jobs)),
                    **{k: v for k, v in self.info.items() if k in ("cells", "seeds", "tuned")})
        self.artifacts = gs.artifact_store(self.run_dir / "artifacts")
        import_local_rows(self.study, self.local_rows, self.keys, self.distributions)
        self.watch = gs.StaleWatch.of(self.study)  # other workers' heartbeats, as this worker sees them
        self.counts = gs.enqueue_keys(self.study, self.keys, self.watch)
        if self.prep is not None:
            self.write_run_json()
        return self.counts

    def identity(self) -> dict:
        """What this run folder's results belong to: the base configuration, every (model, cell)'s configuration
        (seed left out: more seeds may be added), the number of folds and, once decoded, the data
        (``bench.grid.runfolder.data_fingerprint``)."""
        columns = config_columns()
        ident = {"base_config": {k: v for k, v in self.base.to_flat().items() if k in columns},
                 "cells": {f"{j.model}/{j.cell}": {k: v for k, v in j.cfg.to_flat().items() if k in columns}
                           for j in self.jobs},
                 "folds": self.folds}
        if self.preps:
            ident["data"] = data_fingerprint(self.preps)
        return json.loads(json.dumps(ident, default=str))

    def bind_folder(self) -> bool:
        """Bind the run folder to this run's ``identity`` (``bench.grid.runfolder.bind``): a folder bound to another
        configuration or other data is refused. Returns whether ``identity.json`` was created here.

        Raises:
            ValueError: naming the differences.
            CorruptRecordError: a damaged ``identity.json``.
        """
        return bind(self.run_dir, self.identity())

    def check_study(self) -> None:
        """Refuse a study (e.g. an explicit ``--study-name`` in a shared storage) whose finished runs were trained
        with another configuration than their jobs'."""
        diff = {}
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL)):
            job = self.by_key.get(gs.key_of(t))
            if job is not None and gs.record(t, "row") is not None:
                diff.update(config_differences(json.loads(gs.record(t, "row")), job))
        if diff:
            raise ValueError(f"study {self.study_name} in {gs.redact(self.url)} holds runs of another configuration "
                             f"({describe(diff)}); pass another --study-name")

    @property
    def baselines_done(self) -> bool:
        """Whether this folder has every untrained row (grey, mean colour, oracle tint; Bayes rows on controls)."""
        return not self.missing_baselines()

    def missing_baselines(self) -> list[str]:
        """The untrained rows (``bench.grid.jobrun.untrained_rows``) this folder does not have yet."""
        have = {r.get("cell") for r in self.local_rows if r.get("model") == "(none)"}
        return [b for b in untrained_rows(self.test_folder()) if b not in have]

    def test_folder(self):
        """The folder of the test images: ``--test``, else the data set's default test set, else the data set."""
        from bench.data.sources import DEFAULT_TEST

        test = self.test or DEFAULT_TEST.get(self.data) or self.data
        return resolve(test, data_root(self.data_root))[1]

    @property
    def needs_training(self) -> bool:
        """Whether a key is unfinished or a baseline is missing from this folder."""
        return self.counts["finished"] < len(self.keys) or not self.baselines_done

    def prepare(self) -> list[str]:
        """Decode the data (once for every job) and, once the folder exists, write ``run.json``; returns the data
        warnings.

        Raises:
            ValueError, DataError: unusable data (one-line messages).
        """
        warned = self.load_data()
        if self.study is not None:
            self.bind_folder()
            self.write_run_json()
        return warned

    def load_data(self) -> list[str]:
        """Decode and check the data (once for every job); writes nothing. Returns the data warnings.

        Raises:
            ValueError, DataError: unusable data (one-line messages), e.g. splits that share an image.
        """
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if self.folds > 1:
                self.preps = prepare_folds(self.base, self.data, self.folds, self.data_root, verify=self.verify)
            else:
                self.preps = [prepare(self.base, self.data, self.test, self.data_root, verify=self.verify,
                                      cache_mb=self.cache_mb, loader_workers=self.loader_workers)]
        env = environment(self.device)
        p = self.prep
        if p.streamed:
            log.info(f"training data: {len(p.train)} images streamed from disk by {p.loader_workers} DataLoader "
                     f"worker(s) (decoded, they would exceed --cache-mb); {len(p.splits.val)} validation images")
        self.shared = {
            "run": self.run_dir.name, "grid": self.grid,
            "data_train": p.splits.names["train"], "data_test": p.splits.names["test"],
            **split_sizes(p), "n_skipped": sum(len(q.skipped) for q in self.preps), **env,
        }
        self.env = env
        self.trainer = JobTrainer(self.run_dir, self.device, self.shared, folds=self.folds, progress=self.progress,
                                  save_models=self.save_models, trackers=tuple(self.trackers),
                                  several_models=len({j.model for j in self.jobs}) > 1)
        diff = {}  # rows of this folder recorded on other data (same names are required)
        for r in self.local_rows if hasattr(self, "local_rows") else []:
            if r.get("cell") in BASELINES or r.get("model") == "(none)" or key_str(
                    r.get("model"), r.get("cell"), r.get("seed"), r.get("fold")) in self.by_key:
                diff.update(config_differences(r, None, self.data_names()))
        if diff:
            raise ValueError(f"run folder {self.run_dir} holds results of other data ({describe(diff)}); pass "
                             f"another --out")
        said = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]  # not e.g. ResourceWarnings
        for backbone in sorted({j.cfg.lpips_backbone for j in self.jobs} | {self.base.lpips_backbone}):
            if lpips_metric(backbone, self.device)[1] == "missing":
                said.append("the lpips metric needs torchvision's ImageNet VGG-16 and it cannot be had offline: lpips "
                            "stays empty in every row (lpips_backbone=missing); --set lpips_backbone=random uses a "
                            "seeded random VGG-16 instead (flagged)")
        if inception_metric(None, self.device)[1] == "missing":
            said.append("fid and kid need the standard FID Inception-v3 (torch-fidelity, pip install colorbench[fid]; "
                        "its weights from torch's hub cache or downloaded once online): they stay empty in every row "
                        "(inception_backbone=missing)")
        return said

    def write_run_json(self) -> None:
        """``run.json`` (``bench.grid.runfolder.write_run_json``): the command, base configuration, study, number of
        folds, splits, skipped files and environment."""
        write_run_json(self.run_dir, {
            **self.info, "grid": self.grid, "preset": self.preset, "rank_by": self.rank_by,
            "base_config": self.base.to_flat(), "study": self.study_name, "storage": gs.redact(self.url)},
            self.preps, self.folds, mean_abs(self.preps), self.env)

    # ------------------------------------------------------------------------------------------------ training
    def train(self) -> int:
        """Score the grey baseline (once per folder), then claim and train waiting trials until every key is
        finished, waiting for (or taking over) other workers' runs. Returns the number of runs trained here."""
        if not self.preps:
            raise RuntimeError("GridRun.train before GridRun.prepare")
        for row, per_image in self.trainer.baselines(self.preps, self.base.lpips_backbone, self.missing_baselines()):
            append_run(self.run_dir, [row], per_image)
            self.local_rows.append(row)
        bar = tqdm(total=len(self.keys), initial=self.counts["finished"], desc=f"grid {self.grid}",
                   disable=not self.progress, dynamic_ncols=True)
        trained, waited_since, said_at = 0, None, None
        self.steps_here = []  # (steps trained here, steps of the run, resumed) of every run recorded by this worker
        grace = self.watch.grace
        try:
            while True:
                trial = gs.claim(self.study, self.keys)
                if trial is None:
                    # fails stale trials and queues their keys again
                    counts = gs.enqueue_keys(self.study, self.keys, self.watch)
                    bar.n = counts["finished"]
                    bar.refresh()
                    if counts["stale"]:
                        tqdm.write(f"{counts['stale']} stale trial(s) of a lost worker failed; queued again")
                    if counts["finished"] == len(self.keys):
                        return trained
                    if not counts["waiting"]:
                        now = time.monotonic()
                        waited_since = waited_since or now
                        if said_at is None or now - said_at >= max(30, self.heartbeat):
                            said_at = now
                            left = self.watch.takeover_in()
                            keys = ", ".join(sorted(str(k) for k, _, _ in self.watch.running)[:3])
                            tqdm.write(f"waiting for {counts['running']} run(s) on other workers ({keys}): "
                                       f"{now - waited_since:.0f} s so far; a run whose heartbeat stays silent for "
                                       f"{grace} s is taken over here"
                                       + ("" if left is None else f" (the next in {left:.0f} s unless it beats)"))
                        time.sleep(self.heartbeat)
                    continue
                waited_since = said_at = None
                key = gs.key_of(trial)
                outcome = self.train_trial(trial, self.by_key[key])
                if outcome in ("ok", "diverged"):
                    trained += 1
                    bar.update(1)
                elif outcome == "taken over":
                    tqdm.write(f"{key}: trial {trial.number} was failed as stale by another worker; result discarded")
        finally:
            bar.close()

    def train_trial(self, trial: optuna.Trial, job: Job) -> str:
        """Train a claimed trial and record it; returns its outcome (ok, diverged, duplicate, taken over). Its
        heartbeat runs from the claim to the end: a live worker's trial is never silent while it is ``RUNNING``."""
        with gs.keep_alive(self.study, trial):
            return self._train_trial(trial, job)

    def _train_trial(self, trial: optuna.Trial, job: Job) -> str:
        study = self.study
        dup = gs.is_duplicate(study, trial)
        if dup is not None:  # two workers enqueued the same key at once: the lower-numbered trial trains
            gs.close(study, trial, TrialState.FAIL, outcome="duplicate", duplicate_of=dup)
            return "duplicate"
        gs.set_key_params(study, trial, self.keys[job.key], self.distributions)

        def on_validation(step, val_psnr):
            try:
                trial.report(val_psnr, step)  # intermediate values: visible in optuna-dashboard
            except UpdateFinishedTrialError:
                raise TakenOver() from None

        trial.set_user_attr("worker", f"{self.shared['hostname']}:{os.getpid()}")
        distributed.broadcast(job.key)  # under torchrun the other ranks train it with this one (``follow``)
        try:
            row, per_image, history, samples = self.trainer.train(
                job, self.prep_of(job), on_validation, retry=int(trial.user_attrs.get("attempt", 1)) > 1)
        except TakenOver:
            return "taken over"
        except KeyboardInterrupt:
            gs.close(study, trial, TrialState.FAIL, outcome="interrupted")
            raise
        except Exception as err:  # not a divergence: fail the trial (retried later), and stop this worker loudly
            # a full disk is not the run's fault: retried without counting as a crashed attempt
            full = isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT)
            with contextlib.suppress(OSError):  # the journal may be on the full disk too
                gs.close(study, trial, TrialState.FAIL, outcome="interrupted" if full else "error",
                         error=f"{type(err).__name__}: {err}"[:500])
            raise
        records = trial_records(row, per_image, history)  # long: system attributes, and one artifact to read
        attrs = test_means(per_image, row)
        try:
            gs.upload(self.artifacts, trial, samples)
            gs.upload_json(self.artifacts, trial, "run-record.json",
                           json.dumps({k: json.loads(v) for k, v in records.items()}, indent=1, default=str))
        except (OSError, UpdateFinishedTrialError) as err:  # the run itself is still good
            tqdm.write(f"warning: sample images of {job.key} not stored as Optuna artifacts ({err})")
        if row["status"] == "ok" and math.isfinite(row["val_psnr"]):
            told = gs.close(study, trial, TrialState.COMPLETE, row["val_psnr"], records=records, outcome="ok",
                            **attrs)
        else:
            told = gs.close(study, trial, TrialState.FAIL, records=records, outcome="diverged",
                            error=str(row.get("error", "")), **attrs)
        if not told:  # another worker failed it as stale and will train it again: keep no record of this one
            return "taken over"
        append_run(self.run_dir, [row], per_image, history)  # runs.csv last: then the run counts as done
        resumed = int(row.get("resumed_from_step") or 0)  # the steps this worker trained, for the closing line
        self.steps_here.append((job.cfg.steps - resumed, job.cfg.steps, resumed > 0))
        if row["status"] != "ok":
            tqdm.write(f"{job.key} failed at step {row['failed_step']}: {row['error']}")
            return "diverged"
        return "ok"

    def follow(self) -> int:
        """On a rank other than 0 of a torchrun group (``bench.training.distributed``): train every job that rank 0
        names, together with it, until it names none (``release``); rank 0 alone claims, records and writes. Returns the
        number of jobs trained."""
        if not self.preps:
            raise RuntimeError("GridRun.follow before GridRun.load_data")
        n = 0
        while (key := distributed.broadcast()) is not None:
            job = self.by_key[key]
            self.trainer.follow(job, self.prep_of(job))
            n += 1
        return n

    @staticmethod
    def release() -> None:
        """On rank 0 of a torchrun group: tell the other ranks (in ``follow``) that there is no job left."""
        if distributed.world_size() > 1:
            distributed.broadcast(None)

    def finish(self) -> str:
        """Bring this folder's records up to date with the storage and write the leaderboard files; returns the compact
        leaderboard and verdict for the terminal."""
        sync_records(self.study, self.keys, self.run_dir, self.shared)
        return testsets.write(self.run_dir, metric=self.rank_by)[1]  # with any test sets scored later by bench.evaluate
