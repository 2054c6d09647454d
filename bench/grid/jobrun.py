"""The training of one job of a grid run, and the scoring of the untrained baselines, as the rows a run folder
records."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple

import torch

from bench.config.params import shown_values
from bench.core.records import BASELINES, BAYES_PREFIX, GREY, MEAN_COLOUR, ORACLE_TINT, slug, utc_now
from bench.core.tracking import opened
from bench.grid.plan import Job
from bench.metrics.compute import (
    ab_colorizer, constant_colorizer, features_file, networks, oracle_tint_colorizer, save_features, score_set,
    whole_set)
from bench.reporting.samples import save_samples
from bench.training import distributed
from bench.training.checkpoint import CHECKPOINT, model_dir, remove_checkpoint, save_weights
from bench.training.loop import DivergenceError, Prepared, autocast_dtype, train_cell


class JobResult(NamedTuple):
    """What training a job gives: its ``runs.csv`` row, its ``per_image.csv`` and ``history.csv`` rows (none for a
    failed run) and the sample images it saved."""

    row: dict
    per_image: list[dict]
    history: list[dict]
    samples: list


def split_sizes(p: Prepared) -> dict:
    """The ``n_train``, ``n_val``, ``n_test`` columns of a run row (with folds: of the run's fold)."""
    return {"n_train": len(p.train), "n_val": len(p.val_images), "n_test": len(p.test_images)}


def untrained_rows(test_folder) -> tuple[str, ...]:
    """The rows a run scores without training: the baselines (grey, the mean colour), the oracle per-image tint and,
    on a control test set (``bench.data.controls``), every loss's Bayes-optimal row."""
    from bench.data import controls

    bayes = tuple(controls.BAYES_ROWS) if test_folder is not None and controls.spec(test_folder) else ()
    return (*BASELINES, ORACLE_TINT, *bayes)


def untrained_colorizer(cell: str, p: Prepared, mean_colour):
    """The ``colorize_batch`` of an untrained row on one fold's test images (``mean_colour``: the fold's constant)."""
    if cell == GREY:
        return constant_colorizer((0.0, 0.0))
    if cell == MEAN_COLOUR:
        return constant_colorizer(tuple(mean_colour))
    if cell == ORACLE_TINT:
        return oracle_tint_colorizer
    if cell.startswith(BAYES_PREFIX):
        from bench.data import controls
        from bench.data.abbins import ABBins

        bins = ABBins()
        bayes = controls.Bayes(controls.spec(p.splits.roots["test"]), bins.class_weights(p.prior(bins)))
        return ab_colorizer(lambda u8: bayes.predict_ab(cell, u8))
    raise ValueError(f"no untrained row called {cell!r}")


def mean_abs(preps: list[Prepared]) -> list[list[float]]:
    """The mean-colour baseline's constant ab of every fold (one entry without folds): the mean ab of the fold's
    training images' pixels."""
    return [[round(v, 4) for v in p.mean_ab()] for p in preps]


@dataclass
class JobTrainer:
    """Trains jobs of one run and turns each into its rows; writes only the job's own files in the run folder
    (weights or checkpoint, sample images, features), never the CSV files or the study.

    Attributes:
        run_dir: the run folder.
        device: where to train.
        shared: the columns every row of the run starts with (run, grid, data names, sizes, environment).
        folds: 1, or the number of folds of the k-fold rotation (the jobs carry their fold then).
        progress: show a progress bar per job.
        save_models: keep every finished run's weights and configuration in ``run_dir/models/``.
        trackers: experiment-tracking backends (``--log``, ``bench.core.tracking``): each training is tracked under the
            name :meth:`tracking_name`.
        several_models: the run crosses several models (their names then begin the tracking names).
    """

    run_dir: Path
    device: torch.device
    shared: dict
    folds: int = 1
    progress: bool = True
    save_models: bool = True
    trackers: tuple[str, ...] = ()
    several_models: bool = False

    def train(self, job: Job, prep: Prepared, on_validation: Callable[[int, float], None] | None = None,
              retry: bool = False) -> JobResult:
        """Train one job on its fold's decoded data ``prep``; return its rows. Divergence → a failed row.

        Training resumes from the run's checkpoint in ``run_dir/models/...`` if there is a readable one (a ``retry``
        of a lost worker's run says so when there is none) and writes it every ``cfg.checkpoint_every`` steps; a
        finished run's checkpoint is replaced by its final weights (``save_models``) or removed. ``on_validation``
        is called with (step, validation PSNR) after every validation."""
        model_name, cell, cfg, fold = job
        folder = self.folder_of(job)
        folded = {} if fold is None else {"fold": fold}
        of_folds = {} if fold is None else {"folds": self.folds}
        row = {**self.shared, **split_sizes(prep), "model": model_name, "cell": cell, **folded, **of_folds,
               **cfg.to_flat(), "started_at": utc_now(), "world_size": distributed.world_size()}
        row.update(shown_values(cfg))  # the parameters the loss and model registries show (bench.config.params)
        key = {"run": self.shared["run"], "model": model_name, "cell": cell, "seed": cfg.seed, **folded}
        desc = f"{cell} seed {cfg.seed}" + ("" if fold is None else f" fold {fold + 1}/{self.folds}")
        params = {"run": self.shared["run"], "grid": self.shared.get("grid", ""), "model": model_name, "cell": cell,
                  **folded, **cfg.to_flat()}  # what the trackers show as hyper-parameters
        try:
            with opened(self.trackers, self.run_dir, self.tracking_name(job), params) as tracker:
                res = train_cell(cfg, prep, self.device, progress=self.progress, desc=desc,
                                 on_validation=on_validation, checkpoint=folder / CHECKPOINT,
                                 expect_checkpoint=retry, tracker=tracker)
        except DivergenceError as err:
            row.update(status="failed", failed_step=err.step, error=err.reason, finished_at=utc_now())
            remove_checkpoint(folder / CHECKPOINT)
            return JobResult(row, [], [], [])
        row.update(res["metrics"], status="ok", encoder_pretrained=res["encoder_pretrained"],
                   lpips_backbone=res["lpips_backbone"], resumed_from_step=res["resumed_from_step"],
                   finished_at=utc_now())
        if not math.isfinite(row["val_psnr"]):  # a finite loss but colours beyond any range: diverged all the same
            row.update(status="failed", failed_step=cfg.steps, error=f"validation PSNR is {row['val_psnr']}")
            remove_checkpoint(folder / CHECKPOINT)
            return JobResult(row, [], [], [])
        # every test image colorized, while the network is still in memory: the report's gallery and the trial's
        # artifacts (with folds each fold adds its own test images, so together they are every image of the set)
        samples = save_samples(self.run_dir, model_name, cell, cfg.seed, prep, res["model"], self.device,
                               n=None, autocast_dtype=autocast_dtype(cfg, self.device))
        if self.save_models:
            save_weights(folder, res["model"], cfg,
                         {"model": model_name, "cell": cell, "seed": cfg.seed, **folded, **of_folds,
                          "test_set": self.shared["data_test"], "psnr": row["psnr"],
                          "encoder_pretrained": res["encoder_pretrained"],
                          "git_commit": self.shared.get("git_commit", "")})
        remove_checkpoint(folder / CHECKPOINT)  # finished: reduced to the final weights (or to nothing)
        per_image = [{**key, "test_set": self.shared["data_test"], "image": name,
                      **{k: v[i] for k, v in res["per_image"].items()}} for i, name in enumerate(prep.test_keys)]
        history = [{**key, **h} for h in res["history"]]
        save_features(features_file(self.run_dir / "features", model_name, cell, cfg.seed, fold), res["scores"],
                      prep.test_keys)  # per-set metrics' features: their paired bootstrap in the leaderboard
        return JobResult(row, per_image, history, samples)

    def tracking_name(self, job: Job) -> str:
        """A training's name in the trackers (its TensorBoard folder ``tb/<name>``): ``<cell>-seed<k>[-fold<f>]``,
        after ``<model>-`` when the run has several models."""
        name = f"{slug(job.cell)}-seed{job.cfg.seed}" + ("" if job.fold is None else f"-fold{job.fold}")
        return f"{slug(job.model)}-{name}" if self.several_models else name

    def folder_of(self, job: Job) -> Path:
        """The folder of a job's weights and checkpoint: ``models/<model>/<cell>/seed<s>[/fold<f>]``."""
        folder = model_dir(self.run_dir, job.model, job.cell, job.cfg.seed)
        return folder if job.fold is None else folder / f"fold{job.fold}"  # every fold trains its own network

    def follow(self, job: Job, prep: Prepared) -> None:
        """On a rank other than 0 of a torchrun group: train ``job`` together with rank 0, which names it
        (``bench.grid.engine.GridRun.follow``), reads its checkpoint, validates, scores and records it; nothing is
        written here. The same arguments to ``train_cell`` as rank 0's, so that both take the same steps."""
        try:
            train_cell(job.cfg, prep, self.device, progress=False, checkpoint=self.folder_of(job) / CHECKPOINT)
        except (DivergenceError, distributed.Stopped):  # rank 0 saw the same mean loss, or stopped: its next job
            pass

    def baselines(self, preps: list[Prepared], lpips_backbone: str, which=BASELINES) -> list[tuple[dict, list[dict]]]:
        """(run row, per-image rows) of each untrained row in ``which`` (:func:`untrained_rows`): grey (ab = 0),
        the mean colour (each fold's training mean ab, ``mean_ab`` in the row as JSON, one [a, b] per fold), the
        oracle tint and the Bayes rows. One run row for the whole test set, with folds too: they need no training,
        so every fold's test images (``preps``, one per fold) are scored at once."""
        out = []
        nets = networks(self.device, lpips_backbone)
        consts = mean_abs(preps)
        for cell in which:
            shared, per_image, parts = self.shared, [], []
            for f, p in enumerate(preps):
                scores = score_set(untrained_colorizer(cell, p, consts[f]), p.test_images, self.device, nets=nets)
                parts.append(scores)
                per_image += [{"run": shared["run"], "model": "(none)", "cell": cell, "seed": 0,
                               **({"fold": f} if self.folds > 1 else {}), "test_set": shared["data_test"],
                               "image": name, **{k: v[i] for k, v in scores.per_image.items()}}
                              for i, name in enumerate(p.test_keys)]
            metrics = [k for k in per_image[0] if k not in ("run", "model", "cell", "seed", "fold", "test_set",
                                                             "image")]
            whole = whole_set(parts)
            row = {**shared, "model": "(none)", "cell": cell, "loss": "(none)", "seed": 0, "status": "ok",
                   "encoder_pretrained": False, "world_size": 1,  # scored by one process, whatever trained the rest
                   **whole.row(), "started_at": utc_now(), "finished_at": utc_now(),
                   **({"mean_ab": json.dumps(consts)} if cell == MEAN_COLOUR else {}),
                   **{k: sum(r[k] for r in per_image) / len(per_image) for k in metrics}}
            save_features(features_file(self.run_dir / "features", "(none)", cell, 0), whole,
                          [k for p in preps for k in p.test_keys])
            if self.folds > 1:
                row["n_test"] = len(per_image)
            out.append((row, per_image))
        return out
