"""Checkpoints and resume: a worker killed with SIGKILL after a checkpoint is resumed by a rerun of the same command
and ends with the same test PSNR as an uninterrupted run, recorded once; checkpoints are plain tensors, refused
when damaged or foreign, and gone once the run has finished."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState

from bench.config.cell import preset
from bench.core.records import read_rows
from bench.grid import study as gs
from bench.training.checkpoint import load_checkpoint, save_checkpoint
from bench.training.loop import prepare, train_cell
from helpers import hanging_ablate

ROOT = Path(__file__).resolve().parent.parent
CPU = torch.device("cpu")
# 30 steps of 4 crops of 32 px, validation and a checkpoint every 10 steps, 1-second heartbeats
# (one split, --folds 1: the run keys are model/cell/seed)
CMD = ["--grid", "smoke", "--seeds", "1", "--folds", "1", "--steps", "30", "--set", "size=32", "--set", "crop=32",
       "--set", "eval_size=32", "--set", "batch_size=4", "--set", "val_every=10", "--set", "checkpoint_every=10",
       "--device", "cpu", "--no-progress", "--heartbeat", "1"]


def worker(out: Path, hang_at: int | None = None) -> subprocess.Popen:
    """``python -m bench.ablate`` in a process of its own; with ``hang_at``, one whose trial blocks after its
    validation at that step (``helpers.hanging_ablate``)."""
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)}
    run = ["-m", "bench.ablate"] if hang_at is None else hanging_ablate(hang_at)
    return subprocess.Popen([sys.executable, *run, *CMD, "--out", str(out)], cwd=ROOT, env=full_env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(proc: subprocess.Popen, timeout: float = 300) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-3000:]
    return out


def load_study(out: Path) -> optuna.Study:
    name = json.loads((out / "run.json").read_text())["study"]
    return optuna.load_study(study_name=name, storage=gs.open_storage(out / "study.journal"))


@pytest.mark.slow
def test_killed_run_resumes_from_its_checkpoint_with_the_same_result(tmp_path):
    reference = worker(tmp_path / "uninterrupted")
    victim_dir = tmp_path / "killed"
    # the victim blocks in its step-20 validation hook, after writing the step-20 checkpoint
    victim = worker(victim_dir, hang_at=20)
    deadline, running = time.monotonic() + 240, None
    while running is None:
        assert time.monotonic() < deadline and victim.poll() is None, victim.communicate()[0] if victim.poll() else ""
        time.sleep(0.5)
        if (victim_dir / "run.json").exists():
            running = next((t for t in load_study(victim_dir).trials
                            if t.state == TrialState.RUNNING and 20 in t.intermediate_values), None)
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=30)
    key = gs.key_of(running)
    model, cell, seed = key.split("/")
    ckpt = victim_dir / "models" / model / cell / f"seed{seed}" / "checkpoint.pt"
    state = torch.load(ckpt, weights_only=True)
    assert state["train_step"]["step"] == 20

    log = finish(worker(victim_dir))  # the same command again
    assert f"{cell} seed {seed}: resuming from the checkpoint of step 20" in log, log
    # the closing line says what this worker trained: the resumed run's last 10 of 30 steps (issue 31)
    assert re.search(r"\d+ runs? trained by this worker in \d+ s \(1 of them resumed from a checkpoint: 10 of their "
                     r"30 steps trained here", log), log
    ref_log = finish(reference)
    assert "resuming" not in ref_log

    killed = {(r["cell"], r["seed"]): r for r in read_rows(victim_dir / "runs.csv")}
    uninterrupted = {(r["cell"], r["seed"]): r for r in read_rows(tmp_path / "uninterrupted" / "runs.csv")}
    assert len(read_rows(victim_dir / "runs.csv")) == len(killed) == 5  # mse, kl, grey, mean colour, oracle tint: each once
    assert killed.keys() == uninterrupted.keys()
    for k in killed:
        assert abs(float(killed[k]["psnr"]) - float(uninterrupted[k]["psnr"])) <= 0.01, k
    # the resumed run's validation history is whole and not duplicated
    history = [r for r in read_rows(victim_dir / "history.csv") if r["cell"] == cell]
    assert [int(r["step"]) for r in history] == [10, 20, 30]
    ref_history = [r for r in read_rows(tmp_path / "uninterrupted" / "history.csv") if r["cell"] == cell]
    assert [float(r["val_psnr"]) for r in history] == pytest.approx([float(r["val_psnr"]) for r in ref_history],
                                                                    abs=0.01)
    study = load_study(victim_dir)
    assert [t.state for t in study.trials if gs.key_of(t) == key] == [TrialState.FAIL, TrialState.COMPLETE]
    # finished runs keep their final weights, not their checkpoints
    assert not list(victim_dir.rglob("checkpoint.pt"))
    assert len(list(victim_dir.rglob("model.safetensors"))) == 2


@pytest.fixture(scope="module")
def tiny():
    cfg = preset("quick").replace(size=32, crop=32, eval_size=32, batch_size=4, steps=4, val_every=2,
                                  checkpoint_every=2)
    return cfg, prepare(cfg)


@pytest.mark.parametrize("loss, params", [("mse", {}), ("kl", {"rebalance": True}),
                                          ("mse+0.01*wgan_gp", {"critic_width": 8}),  # a critic with its own Adam
                                          ("mse+0.1*perceptual", {"backbone": "random"})])  # a frozen VGG-16
def test_resume_in_process_matches_uninterrupted(tiny, tmp_path, capsys, loss, params):
    """Interrupting after the step-2 checkpoint (an exception from the validation hook) and training again from it
    gives bit-identical weights and metrics."""
    cfg, prep = tiny
    cfg = cfg.replace(loss=loss, loss_params=params)
    full = train_cell(cfg, prep, CPU, progress=False)
    ckpt = tmp_path / "checkpoint.pt"

    class Stop(Exception):
        pass

    def stop(step, val):
        if step == 2:
            raise Stop

    with pytest.raises(Stop):
        train_cell(cfg, prep, CPU, progress=False, on_validation=stop, checkpoint=ckpt)
    saved = torch.load(ckpt, weights_only=True)
    assert saved["train_step"]["step"] == 2
    # a frozen VGG is rebuilt from the configuration, not stored (60 MB each checkpoint); a critic is stored
    assert not any(k.startswith("terms.1.vgg.") for k in saved["train_step"]["criterion"])
    if "wgan_gp" in loss:
        assert any("critic" in k for k in saved["train_step"]["criterion"])
    torch.manual_seed(1234)  # whatever the RNGs do in between, the checkpoint's states are restored
    resumed = train_cell(cfg, prep, CPU, progress=False, checkpoint=ckpt)
    assert "resuming from the checkpoint of step 2" in capsys.readouterr().err
    assert resumed["metrics"]["psnr"] == full["metrics"]["psnr"]
    assert [h["val_psnr"] for h in resumed["history"]] == [h["val_psnr"] for h in full["history"]]
    for k, v in full["model"].state_dict().items():
        assert torch.equal(v, resumed["model"].state_dict()[k]), k
    assert [h["train_loss"] for h in resumed["history"]] == [h["train_loss"] for h in full["history"]]


def test_unusable_checkpoints_are_not_resumed(tiny, tmp_path, capsys):
    cfg, prep = tiny
    ckpt = tmp_path / "checkpoint.pt"
    # a retried run without a checkpoint (e.g. another machine's folder) says so and starts from step 0
    train_cell(cfg.replace(steps=1), prep, CPU, progress=False, checkpoint=ckpt, expect_checkpoint=True)
    assert "no checkpoint at" in capsys.readouterr().err and not ckpt.exists()
    # damaged
    ckpt.write_bytes(b"half a checkpoint")
    train_cell(cfg.replace(steps=1), prep, CPU, progress=False, checkpoint=ckpt)
    assert "cannot be read (" in capsys.readouterr().err
    # a pickled object is never unpickled: weights_only refuses it
    torch.save({"format": 1, "evil": Path("x")}, ckpt)
    assert load_checkpoint(ckpt, cfg)[0] is None
    # another configuration's checkpoint (another lr) is not resumed; how often to save does not matter
    save_checkpoint(ckpt, cfg, {"step": 1}, {})
    assert load_checkpoint(ckpt, cfg.replace(lr=1e-3))[0] is None
    assert load_checkpoint(ckpt, cfg.replace(checkpoint_every=5))[0] is not None
