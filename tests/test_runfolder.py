"""A run folder's records (``bench.grid.runfolder``) on a temporary folder: the identity binding, the CSV files and
``run.json``, and runs carried between the folder and a study both ways."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest

from bench.core.records import CorruptRecordError, read_rows
from bench.data.sources import Splits
from bench.grid import runfolder
from bench.grid import study as gs
from bench.grid.runfolder import IDENTITY, append_run, bind, data_fingerprint, from_columns, import_local_rows, \
    read_local_rows, recorded_base_config, sync_records, to_columns, unbind, write_run_json

IDENT = {"base_config": {"steps": 2, "lr": 0.001}, "cells": {"unet_vgg16/mse": {"loss": "mse"}}, "folds": 1}


def test_a_folder_is_bound_to_one_identity(tmp_path):
    assert bind(tmp_path, IDENT) is True  # created here
    assert json.loads((tmp_path / IDENTITY).read_text()) == IDENT
    assert bind(tmp_path, IDENT) is False
    # a grown grid: the new cell is added, the old one kept
    grown = {**IDENT, "cells": {"unet_vgg16/kl": {"loss": "kl"}}}
    assert bind(tmp_path, grown) is False
    assert set(json.loads((tmp_path / IDENTITY).read_text())["cells"]) == {"unet_vgg16/mse", "unet_vgg16/kl"}
    with pytest.raises(ValueError, match=r"holds results of another configuration \(steps: 2 → 3\)"):
        bind(tmp_path, {**IDENT, "base_config": {"steps": 3, "lr": 0.001}})
    with pytest.raises(ValueError, match="another number of folds"):
        bind(tmp_path, {**IDENT, "folds": 4})
    unbind(tmp_path)
    assert not (tmp_path / IDENTITY).exists() and not (tmp_path / (IDENTITY + ".lock")).exists()
    (tmp_path / IDENTITY).write_text("{not json")
    with pytest.raises(CorruptRecordError, match=IDENTITY):
        bind(tmp_path, IDENT)


def row(cell, seed, **more):
    return {"run": "r", "model": "unet_vgg16", "cell": cell, "seed": seed, "status": "ok", "val_psnr": 21.5, **more}


def test_rows_are_appended_once_and_read_back_validated(tmp_path):
    assert read_local_rows(tmp_path / "nothing") == [] and recorded_base_config(tmp_path / "nothing") == {}
    per_image = [{**row("mse", 0), "image": f"{i}.png", "psnr": 20 + i} for i in range(2)]
    history = [{**row("mse", 0), "step": s} for s in (1, 2)]
    for _ in range(2):
        append_run(tmp_path, [row("mse", 0)], per_image, history)
    assert len(read_local_rows(tmp_path)) == 1
    assert len(read_rows(tmp_path / "per_image.csv")) == 2 and len(read_rows(tmp_path / "history.csv")) == 2
    append_run(tmp_path, [row("grey", 0, model="(none)")], [])  # a baseline: no history
    assert [r["cell"] for r in read_local_rows(tmp_path)] == ["mse", "grey"]
    (tmp_path / "history.csv").write_text("garbage\n1,2\n")
    with pytest.raises(CorruptRecordError, match="history.csv"):
        read_local_rows(tmp_path)
    (tmp_path / "run.json").write_text("[1]")
    with pytest.raises(CorruptRecordError, match="run.json"):
        recorded_base_config(tmp_path)


def test_columns_round_trip_and_test_means():
    rows = [{"image": "a.png", "psnr": 20.0}, {"image": "b.png", "psnr": 22.0, "ssim": 0.5}]
    cols = to_columns(rows)
    assert cols == {"image": ["a.png", "b.png"], "psnr": [20.0, 22.0], "ssim": [None, 0.5]}
    assert from_columns(cols) == rows and from_columns({}) == []
    assert runfolder.test_means(rows, {"fid": 3.0}) == {"test_psnr": 21.0, "test_ssim": 0.5, "test_fid": 3.0}
    records = runfolder.trial_records(row("mse", 0), rows, [])
    assert json.loads(records["row"])["cell"] == "mse" and from_columns(json.loads(records["per_image"])) == rows


def prepared(tmp_path: Path) -> SimpleNamespace:
    """What ``write_run_json`` and ``data_fingerprint`` read of a ``bench.training.loop.Prepared``, on three tiny
    files."""
    files = []
    for name in ("a.png", "b.png", "c.png"):
        (tmp_path / name).write_bytes(name.encode())
        files.append(tmp_path / name)
    splits = Splits(files[:1], files[1:2], files[2:], names={"train": "mine", "test": "mine"},
                    roots={s: tmp_path for s in ("train", "val", "test")})
    return SimpleNamespace(splits=splits, fingerprints={"train": {"a.png": "fa"}, "val": {"b.png": "fb"}},
                           skipped=["d.png: unreadable"], streamed=False)


def test_run_json_and_data_fingerprint(tmp_path):
    p = prepared(tmp_path)
    fp = data_fingerprint([p])
    assert list(fp) == ["0"] and fp["0"]["train"] == {"a.png": "69aba0d0454229b6d23e7fa09f13f38abd93e7d6"}
    head = {"command": "colorbench ablate", "grid": "g", "study": "s"}
    write_run_json(tmp_path, head, [p], 1, [[1.0, 2.0]], {"torch": "x"})
    meta = json.loads((tmp_path / "run.json").read_text())
    assert list(meta) == ["command", "grid", "study", "folds", "splits", "skipped", "mean_ab", "fingerprints",
                          "environment", "written_at"]
    assert meta["splits"] == {k: [str(tmp_path / f)] for k, f in (("train", "a.png"), ("val", "b.png"),
                                                                   ("test", "c.png"))}
    assert meta["fingerprints"] == {"train": {"a.png": "fa"}, "val": {"b.png": "fb"}}
    write_run_json(tmp_path, head, [p, p], 2, [[1.0, 2.0]] * 2, {})
    meta = json.loads((tmp_path / "run.json").read_text())
    assert meta["folds"] == 2 and meta["splits"] == {"test": [str(tmp_path / "c.png")] * 2}
    assert [f["fold"] for f in meta["fold_splits"]] == [0, 1]


def test_runs_go_from_a_folder_to_the_study_and_back(tmp_path):
    """Rows of one folder's runs.csv become finished trials (once, and only the plan's); syncing the study into
    another folder writes the same rows."""
    old, new = tmp_path / "old", tmp_path / "new"
    append_run(old, [row("mse", 0), row("l1", 0, status="failed", val_psnr="nan", error="diverged"),
                     row("not_in_plan", 0)], [])
    keys = {f"unet_vgg16/{c}/0": {"model": "unet_vgg16", "cell": c, "seed": 0} for c in ("mse", "l1")}
    study = gs.open_study("s", tmp_path / "study.journal", 30, optuna.samplers.RandomSampler(seed=0))
    distributions = gs.key_distributions(keys)
    assert import_local_rows(study, read_local_rows(old), keys, distributions) == 2
    assert import_local_rows(study, read_local_rows(old), keys, distributions) == 0  # known now
    outcomes = {gs.key_of(t): (t.state.name, t.user_attrs["outcome"]) for t in study.trials}
    assert outcomes == {"unet_vgg16/mse/0": ("COMPLETE", "ok"), "unet_vgg16/l1/0": ("FAIL", "diverged")}
    sync_records(study, keys, new)
    by_cell = lambda rows: sorted(rows, key=lambda r: r["cell"])  # noqa: E731
    assert by_cell(read_local_rows(new)) == by_cell([r for r in read_local_rows(old) if r["cell"] != "not_in_plan"])
    assert not (new / "per_image.csv").exists() and not (new / "history.csv").exists()
