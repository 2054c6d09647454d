"""The grid engine: runs a plan's jobs through an Optuna study that several workers share, and keeps the run folder's
records up to date.

``GridRun`` orchestrates the parts, each in its own module: the plan (``bench.grid.plan``: jobs, configuration hashes),
the run folder's records (``bench.grid.runfolder``: identity, ``run.json``, CSV files ↔ study) and the training of one
job (``bench.grid.jobrun``). Its own code is in three rooms: the study binding (``bench.grid.binding.FolderBinding``:
folder, identity, study, what is missing), the data (here: ``prepare``, ``load_data``, ``run.json``) and the trial
loop (``bench.grid.trials.TrialLoop``: baselines, claim, train, record, ``finish``). No argument parsing here: ``bench.ablate`` turns a command line into a ``GridRun`` and
calls, in order, ``check_folder`` and ``open`` (folder and study, before any data is decoded unless the folder needs
them), ``prepare`` (data), ``train`` and ``finish`` (leaderboard).
Each (model, cell, seed) is one trial of an Optuna study (``bench.grid.study``): several workers running the same plan
split it, and every run is trained once. With k-fold rotation (``folds`` ≥ 2, the default for the bundled Kodak24)
each (model, cell, seed, fold) is a run: fold f trains on its own training images and tests on its own test images,
and the folds' test images together are every image of the set once, so per-image results of one (model, cell,
seed) from different folds cover different images of one test set.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import optuna
import torch

from bench.config.cell import CellConfig
from bench.core.log import get_logger
from bench.core.records import BASELINES, environment
from bench.grid import study as gs
from bench.grid.binding import FolderBinding
from bench.grid.jobrun import JobTrainer, mean_abs, split_sizes
from bench.grid.plan import Job, config_differences, describe, key_str
from bench.grid.runfolder import write_run_json
from bench.grid.trials import TrialLoop
from bench.metrics import stats as pstats
from bench.metrics.compute import inception_metric, lpips_metric
from bench.training.loop import Prepared, prepare, prepare_folds

log = get_logger(__name__)


@dataclass
class GridRun(FolderBinding, TrialLoop):
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


    # ------------------------------------------------------------------------------------------------ data
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
