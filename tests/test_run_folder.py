"""A run folder holds the results of one configuration on one data set, whatever happens (issue 22, engine side):
changed data, two different runs started at once into one --out, cells with one folder name, a full disk while
weights are saved, and storage errors. Tiny smoke runs in process (32-px crops, 2 steps, 1 seed)."""
from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess

import optuna
import pytest
from optuna.trial import TrialState

from bench.config import grids
from bench.config.cell import preset
from bench.core.records import read_rows
from bench.grid import study as gs
from bench.grid.engine import GridRun
from bench.grid.plan import plan_jobs
from bench.grid.runfolder import IDENTITY
import bench.training.checkpoint
from helpers import one_error, run

TINY = ["--set", "size=32", "--set", "crop=32", "--set", "eval_size=32", "--set", "batch_size=4", "--steps", "2",
        "--device", "cpu", "--no-progress", "--folds", "1"]


@pytest.fixture
def photos(tmp_path, data_root):
    """A folder of 12 CBSD68 photos (another 2 kept aside, to be added later)."""
    folder, spare = tmp_path / "photos", tmp_path / "spare"
    folder.mkdir()
    spare.mkdir()
    files = sorted((data_root / "cbsd68").glob("*.png"))
    for f in files[:12]:
        shutil.copy(f, folder / f.name)
    for f in files[12:14]:
        shutil.copy(f, spare / f.name)
    return folder, spare


def argv(out, data, *extra):
    return ["--grid", "smoke", "--seeds", "1", "--data", str(data), "--out", str(out), *TINY, *extra]


def test_added_images_are_not_pooled_into_the_same_folder(tmp_path, photos, capsys):
    folder, spare = photos
    out = tmp_path / "run"
    rc, _, err = run(argv(out, folder), capsys)
    assert rc == 0, err
    assert json.loads((out / IDENTITY).read_text())["data"]["0"]["test"]  # the data are recorded by content
    for f in spare.iterdir():  # the user adds photos, then asks for another seed in the same folder
        shutil.copy(f, folder / f.name)
    rc, _, err = run(argv(out, folder, "--seeds", "2"), capsys)
    one_error(rc, err, "other data", "added", str(out))
    rows = read_rows(out / "runs.csv")
    assert sorted(r["cell"] for r in rows) == ["grey", "kl", "mean_colour", "mse", "oracle_tint"]  # nothing trained on the other images
    # an edited photo (same names, other content) is another data set too
    for f in spare.iterdir():
        (folder / f.name).unlink()
    victim = sorted(folder.iterdir())[0]
    shutil.copy(next(spare.iterdir()), victim)
    rc, _, err = run(argv(out, folder, "--seeds", "2"), capsys)
    one_error(rc, err, "other data", "changed", victim.name)


def test_two_configurations_started_at_once_into_one_folder_cannot_both_run(tmp_path, data_root):
    """Both pass the checks of the (still empty) folder; whichever binds the folder first runs, the other is
    refused before its study exists."""
    out = tmp_path / "run"
    grid = grids.get("smoke")
    runs = []
    for steps in (2, 3):
        base = preset("quick").replace(steps=steps, size=32, crop=32, eval_size=32, batch_size=4)
        jobs = plan_jobs(grid, base, ["unet_vgg16"], 1)
        runs.append(GridRun("smoke", "quick", base, jobs, out, "cpu", data="cbsd68", data_root=str(data_root),
                            progress=False))
    for r in runs:
        r.check_folder()
        r.load_data()
    runs[0].open()
    with pytest.raises(ValueError, match=r"another configuration.*steps: 2 → 3"):
        runs[1].open()
    names = optuna.get_all_study_names(gs.open_storage(out / "study.journal"))
    assert names == [runs[0].study_name]


def test_cells_with_one_folder_name_are_refused_before_anything_runs(tmp_path, capsys, monkeypatch, data_root):
    for a, b in (("a b", "a_b"), ("mse", "mse"), ("Kl", "kl")):
        monkeypatch.setitem(grids.GRIDS, "clash", grids.Grid("clash", "two cells, one folder", (
            grids.Cell(a, {"loss": "mse"}), grids.Cell(b, {"loss": "kl"}))))
        out = tmp_path / f"run-{a}"
        rc, _, err = run(["--grid", "clash", "--seeds", "1", "--data", "cbsd68", "--data-root", str(data_root),
                          "--out", str(out), *TINY], capsys)
        one_error(rc, err, repr(a), repr(b))
        assert not out.exists()


def test_full_disk_while_saving_weights_is_one_line_and_the_rerun_trains_what_is_missing(tmp_path, capsys,
                                                                                         monkeypatch, data_root):
    from safetensors import SafetensorError

    calls = []

    def full(net, path, metadata=None):  # what safetensors raises on a full disk (measured on a 64 KiB tmpfs)
        calls.append(path)
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    out = tmp_path / "run"
    args = ["--grid", "smoke", "--seeds", "1", "--data", "cbsd68", "--data-root", str(data_root), "--out", str(out),
            *TINY]
    monkeypatch.setattr(bench.training.checkpoint, "save_model", full)
    rc, _, err = run(args, capsys)
    one_error(rc, err, "no space left", "model.safetensors")
    assert len(calls) == 1 and not list(out.rglob("*.tmp"))
    study = optuna.load_study(study_name=json.loads((out / "run.json").read_text())["study"],
                              storage=gs.open_storage(out / "study.journal"))
    lost = [t for t in study.trials if t.state == TrialState.FAIL]
    assert len(lost) == 1 and lost[0].user_attrs["outcome"] == "interrupted"  # not counted as a crashed attempt
    monkeypatch.undo()
    rc, _, err = run(args, capsys)
    assert rc == 0, err
    rows = read_rows(out / "runs.csv")
    assert sorted(r["cell"] for r in rows) == ["grey", "kl", "mean_colour", "mse", "oracle_tint"] and all(r["status"] == "ok" for r in rows)
    assert len(list((out / "models").rglob("model.safetensors"))) == 2


def test_full_disk_while_writing_a_checkpoint_names_the_file(tmp_path):
    """On a real full disk (a 64 KiB tmpfs) torch.save raises an obscure RuntimeError ("unexpected pos ..."):
    checkpoints are written so that it is an OSError (ENOSPC) naming the checkpoint, which bench.cli reports in one
    line, and the previous checkpoint stays."""
    import torch

    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        path, cfg = disk / "checkpoint.pt", preset("quick")
        bench.training.checkpoint.save_checkpoint(path, cfg, {"step": 1}, {})
        before = path.read_bytes()
        with pytest.raises(OSError) as info:  # 80 KB of weights do not fit
            bench.training.checkpoint.save_checkpoint(path, cfg, {"step": 2, "w": torch.zeros(20_000)}, {})
        assert info.value.errno == errno.ENOSPC and info.value.filename == str(path)
        assert path.read_bytes() == before and not list(disk.glob(".*.tmp"))
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def test_storage_errors_leave_no_empty_out_folder(tmp_path, capsys, data_root):
    out = tmp_path / "new" / "nested" / "run"
    args = ["--grid", "smoke", "--seeds", "1", "--data", "cbsd68", "--data-root", str(data_root), "--out", str(out),
            *TINY]
    for url in ("postgresql+psycopg://someone@127.0.0.1:1/nothing", "nosuchdriver://x/y"):
        rc, _, err = run([*args, "--storage", url], capsys)
        one_error(rc, err, "cannot open")
        assert not (tmp_path / "new").exists()


def test_workers_that_check_one_new_folder_together_do_not_trip_each_other(tmp_path):
    """Two workers started at once on one new --out both pass the writability probe (CI saw one lose the race)."""
    from concurrent.futures import ThreadPoolExecutor

    from bench.core.paths import check_writable

    for attempt in range(20):
        folder = tmp_path / f"run{attempt}"
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda _: check_writable(folder), range(32)))
        assert list(folder.iterdir()) == []
