"""The trial loop of a grid run: claim a waiting trial of the shared study, train it, record it, until none is left.

``TrialLoop`` is the part of ``bench.grid.engine.GridRun`` that trains: the untrained baselines first, then one
claimed trial after another (waiting for, or taking over, other workers' runs), each closed in the study before its
row is appended to ``runs.csv``. Under torchrun rank 0 claims and the other ranks ``follow``.
"""
from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import time

import optuna
from optuna.trial import TrialState
from tqdm.auto import tqdm

from bench.grid import study as gs
from bench.grid.optuna_compat import UpdateFinishedTrialError
from bench.grid.plan import Job
from bench.grid.runfolder import append_run, sync_records, test_means, trial_records
from bench.reporting import testsets
from bench.training import distributed


class TakenOver(RuntimeError):
    """This worker's trial was failed as stale by another worker (its heartbeat was late): stop training it."""


class TrialLoop:
    """A grid run's training: baselines, then claimed trials until every key is finished."""

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
