"""Experiment tracking (``--log``, ``bench.core.tracking``) end to end through the command line: what TensorBoard,
MLflow and W&B (offline) hold after a tiny grid, read back with each backend's own reader and compared with what the run
recorded; a backend that is not installed is one line with exit code 2 and leaves no folder; tracking changes
neither the results nor the run folder's name; every Optuna trial and every worker of ``--workers`` is tracked."""
from __future__ import annotations

import contextlib
import csv
import importlib.util
import math
import sys
from pathlib import Path

import pytest

from bench import ablate, tune
from helpers import one_error

# the smoke grid (mse, kl) on the bundled Kodak24 in 2 folds: 4 trainings of 3 steps, validated at every step
TINY = ["--grid", "smoke", "--seeds", "1", "--folds", "2", "--set", "size=32", "--set", "crop=32", "--set",
        "eval_size=32", "--set", "batch_size=4", "--steps", "3", "--set", "val_every=1", "--device", "cpu",
        "--no-progress"]
STEPS = 3
HAS_WANDB = importlib.util.find_spec("wandb") is not None
BACKENDS = ["tensorboard", "mlflow", *(["wandb"] if HAS_WANDB else [])]


def rows(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The tiny grid once with every installed backend and once without tracking: (tracked folder, untracked)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("WANDB_MODE", "offline")
    mp.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    base = tmp_path_factory.mktemp("tracking")
    tracked, plain = base / "tracked", base / "plain"
    try:
        assert ablate.main([*TINY, "--out", str(tracked), "--log", *BACKENDS]) == 0
        assert ablate.main([*TINY, "--out", str(plain)]) == 0
    finally:
        mp.undo()
    return tracked, plain


def trained(folder: Path) -> list[dict]:
    """The trained rows of a run folder's ``runs.csv``."""
    return [r for r in rows(folder / "runs.csv") if r["model"] != "(none)"]


def name_of(row: dict) -> str:
    return f"{row['cell']}-seed{row['seed']}-fold{row['fold']}"


def history_of(folder: Path, row: dict) -> list[dict]:
    """The ``history.csv`` rows of one training, by step."""
    mine = [h for h in rows(folder / "history.csv")
            if (h["cell"], h["seed"], h["fold"]) == (row["cell"], row["seed"], row["fold"])]
    return sorted(mine, key=lambda h: int(h["step"]))


def events(folder: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    return acc


def test_tensorboard_runs_lie_side_by_side(runs):
    tracked, _ = runs
    assert sorted(p.name for p in (tracked / "tb").iterdir()) == sorted(name_of(r) for r in trained(tracked))


def test_tensorboard_has_every_step_val_psnr_test_metrics_and_images(runs):
    tracked, _ = runs
    for row in trained(tracked):
        acc = events(tracked / "tb" / name_of(row))
        history = history_of(tracked, row)
        loss = acc.Scalars("train/loss")
        assert [e.step for e in loss] == list(range(1, STEPS + 1))
        assert [h["step"] for h in history] == [str(s) for s in range(1, STEPS + 1)]  # val_every=1: every step
        for e, h in zip(loss, history):
            assert math.isclose(e.value, float(h["train_loss"]), rel_tol=1e-6)  # events hold float32
        assert math.isclose(loss[-1].value, float(row["final_loss"]), rel_tol=1e-6)
        val = acc.Scalars("val/psnr")
        assert [(e.step, round(e.value, 4)) for e in val] == [(int(h["step"]), round(float(h["val_psnr"]), 4))
                                                               for h in history]
        assert math.isclose(acc.Scalars("test/psnr")[-1].value, float(row["psnr"]), rel_tol=1e-6)
        images = acc.Tags()["images"]
        assert images and all(t.startswith("samples/") for t in images)
        first = acc.Images(images[0])[0]
        assert (first.step, first.width, first.height) == (STEPS, 32, 32)


def test_tensorboard_hparams_name_the_cell_seed_and_fold(runs):
    from tensorboard.plugins.hparams import plugin_data_pb2

    tracked, _ = runs
    row = trained(tracked)[0]
    acc = events(tracked / "tb" / name_of(row))
    content = acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    info = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
    hp = {k: v.string_value or v.number_value for k, v in info.hparams.items()}
    assert (hp["cell"], hp["seed"], hp["fold"], hp["loss"]) == (row["cell"], int(row["seed"]), int(row["fold"]),
                                                                row["loss"])
    assert math.isclose(hp["lr"], float(row["lr"]))


def test_mlflow_file_store_has_one_run_per_training(runs, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    tracked, _ = runs
    client = MlflowClient(tracking_uri=(tracked / "mlruns").resolve().as_uri())
    experiment = client.get_experiment_by_name(tracked.name)  # one experiment per run folder, named after it
    found = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert sorted(found) == sorted(name_of(r) for r in trained(tracked))
    for row in trained(tracked):
        run = found[name_of(row)]
        assert run.info.status == "FINISHED"
        history = client.get_metric_history(run.info.run_id, "train/loss")
        assert sorted(m.step for m in history) == list(range(1, STEPS + 1))
        by_step = {m.step: m.value for m in history}
        assert [by_step[int(h["step"])] for h in history_of(tracked, row)] == [
            float(h["train_loss"]) for h in history_of(tracked, row)]
        assert len(client.get_metric_history(run.info.run_id, "val/psnr")) == STEPS
        assert math.isclose(run.data.metrics["test/psnr"], float(row["psnr"]), rel_tol=1e-9)
        params = run.data.params
        assert (params["cell"], params["seed"], params["fold"], params["loss"]) == (
            row["cell"], row["seed"], row["fold"], row["loss"])
        assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["samples"]


@pytest.mark.skipif(not HAS_WANDB, reason="wandb is not installed (pip install colorbench[wandb])")
def test_wandb_offline_runs_hold_the_history(runs):
    tracked, _ = runs
    offline = sorted((tracked / "wandb").glob("offline-run-*"))
    assert len(offline) == len(trained(tracked))
    for folder in offline:
        log = next(folder.glob("run-*.wandb")).read_bytes()  # W&B's own record log, what `wandb sync` uploads
        for key in (b"train/loss", b"val/psnr", b"test/psnr"):
            assert key in log, key
        assert list((folder / "files" / "media" / "images").rglob("*.png"))


def test_tracking_changes_no_result(runs):
    tracked, plain = runs
    a, b = trained(tracked), trained(plain)
    keys = ("cell", "seed", "fold", "psnr", "ssim", "final_loss", "val_psnr")
    assert [[r[k] for k in keys] for r in a] == [[r[k] for k in keys] for r in b]
    assert rows(tracked / "history.csv")[0].keys() == rows(plain / "history.csv")[0].keys()
    assert not (plain / "tb").exists() and not (plain / "mlruns").exists()


def test_tracking_changes_no_configuration_hash(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("COLORBENCH_RESULTS", str(tmp_path / "results"))
    assert ablate.main([*TINY, "--dry-run"]) == 0
    plain = capsys.readouterr().out.splitlines()[0]
    assert ablate.main([*TINY, "--dry-run", "--log", "tensorboard", "--log", "mlflow"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == plain  # the same hash, the same run folder
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("backend", ["tensorboard", "mlflow", "wandb"])
def test_a_missing_backend_is_one_line_exit_2_and_creates_nothing(backend, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, backend, None)  # `import <backend>` raises ImportError, as when not installed
    out = tmp_path / "out"
    rc = ablate.main([*TINY, "--out", str(out), "--log", "tensorboard", backend])
    one_error(rc, capsys.readouterr().err, f"--log {backend}", f"pip install colorbench[{backend}]")
    rc = tune.main(["--loss", "mse", "--steps", "2", "--trials", "1", "--no-progress", "--out", str(out), "--log",
                    backend])
    one_error(rc, capsys.readouterr().err, f"pip install colorbench[{backend}]")
    assert not out.exists()


def test_an_unknown_backend_is_refused_by_the_parser(tmp_path, capsys):
    rc = ablate.main([*TINY, "--out", str(tmp_path / "out"), "--log", "comet"])
    one_error(rc, capsys.readouterr().err, "--log", "comet", "tensorboard")


def test_each_tune_trial_is_a_tensorboard_run(tmp_path):
    out = tmp_path / "tune"
    argv = ["--loss", "mse", "--steps", "2", "--set", "val_every=1", "--set", "batch_size=4", "--set", "size=32",
            "--set", "crop=32", "--set", "eval_size=32", "--trials", "2", "--device", "cpu", "--no-progress",
            "--heartbeat", "2", "--out", str(out), "--log", "tensorboard"]
    assert tune.main(argv) == 0
    assert sorted(p.name for p in (out / "tb").iterdir()) == ["trial0", "trial1"]
    for trial in ("trial0", "trial1"):
        acc = events(out / "tb" / trial)
        assert [e.step for e in acc.Scalars("train/loss")] == [1, 2]
        assert [e.step for e in acc.Scalars("val/psnr")] == [1, 2]
        assert acc.Tags()["images"]


@pytest.mark.slow
def test_workers_track_into_their_own_folders(tmp_path, monkeypatch):
    """``--workers 2``: each training has its TensorBoard folder and its MLflow run in the one experiment."""
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    out = tmp_path / "w"
    assert ablate.main([*TINY, "--out", str(out), "--workers", "2", "--log", "tensorboard", "mlflow"]) == 0
    names = sorted(name_of(r) for r in trained(out))
    assert sorted(p.name for p in (out / "tb").iterdir()) == names
    client = MlflowClient(tracking_uri=(out / "mlruns").resolve().as_uri())
    experiments = [e for e in client.search_experiments() if e.name == out.name]
    assert len(experiments) == 1
    assert sorted(r.info.run_name for r in client.search_runs([experiments[0].experiment_id])) == names


class Recorder:
    """A backend that records the protocol calls it gets (``fail``: the method that raises)."""

    calls: list = []
    fail = ""

    def __getattr__(self, method):
        def call(*args):
            Recorder.calls.append((method, args))
            if method == Recorder.fail:
                raise OSError("disk full")
        return call


@pytest.mark.parametrize("raised,status", [(None, "ok"), (RuntimeError("diverged"), "failed"),
                                           (KeyboardInterrupt(), "killed")])
def test_opened_closes_with_the_trainings_status(raised, status, monkeypatch, tmp_path):
    from bench.core import tracking

    monkeypatch.setitem(tracking.MAKERS, "tensorboard", Recorder)
    monkeypatch.setattr(Recorder, "calls", [])
    with pytest.raises(type(raised)) if raised else contextlib.nullcontext():
        with tracking.opened(["tensorboard"], tmp_path, "mse-seed0", {"lr": 0.1}) as t:
            t.scalar("train/loss", 0.5, 1)
            t.hparams(None, {"test/psnr": 20.0})
            if raised:
                raise raised
    assert [c[0] for c in Recorder.calls] == ["start", "scalar", "hparams", "close"]
    assert Recorder.calls[0][1] == ("mse-seed0", {"lr": 0.1}, tmp_path)
    assert Recorder.calls[2][1] == ({"lr": 0.1}, {"test/psnr": 20.0})  # start's parameters
    assert Recorder.calls[-1][1] == (status,)


def test_a_failing_backend_is_left_out_and_the_training_goes_on(monkeypatch, tmp_path, capsys):
    from bench.core import tracking

    class Other(Recorder):
        pass

    monkeypatch.setitem(tracking.MAKERS, "tensorboard", Recorder)
    monkeypatch.setitem(tracking.MAKERS, "mlflow", Other)
    monkeypatch.setattr(Recorder, "calls", [])
    monkeypatch.setattr(Recorder, "fail", "image")
    with tracking.opened(["tensorboard", "mlflow"], tmp_path, "run", {}) as t:
        t.image("samples/x", None, 3)  # both get it; both fail (one class): both are left out
        t.scalar("train/loss", 0.5, 4)
    err = capsys.readouterr().err
    assert err.count("warning: tracking with") == 2 and "disk full" in err
    assert [c[0] for c in Recorder.calls] == ["start", "start", "image", "image"]


def test_parameters_are_flattened_for_the_tables():
    from bench.core.tracking import finite_metrics, flat_params

    assert flat_params({"a": 1, "b": None, "c": {"x": [1, 2]}, "d": True}) == {
        "a": 1, "b": "null", "c": '{"x": [1, 2]}', "d": True}
    assert finite_metrics({"psnr": 20.0, "lpips": math.nan, "lpips_backbone": "random", "n": 3}, "test/") == {
        "test/psnr": 20.0, "test/n": 3.0}
