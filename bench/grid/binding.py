"""The run folder and the study of a grid run: which folder and study its results belong to, and what they miss.

``FolderBinding`` is the part of ``bench.grid.engine.GridRun`` that reads the run folder's records, binds the folder
to the run's configuration (``identity.json``), opens or joins the study and queues what is unfinished. It uses
GridRun's fields (``run_dir``, ``jobs``, ``keys``, ``by_key``, ``url``, ``study`` ...).
"""
from __future__ import annotations

import hashlib
import json

import optuna
from optuna.trial import TrialState

from bench.core.paths import check_writable
from bench.data.sources import data_root, resolve
from bench.grid import study as gs
from bench.grid.jobrun import untrained_rows
from bench.grid.plan import DATA_COLUMNS, config_columns, config_differences, describe, key_str
from bench.grid.runfolder import bind, data_fingerprint, import_local_rows, read_local_rows, recorded_base_config, unbind


class FolderBinding:
    """A grid run's folder and study: check the folder, bind it, open the study, say what is missing."""

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
