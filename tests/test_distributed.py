"""One run on several processes (``bench.training.distributed``, issue 30 item 5): ``torchrun --nproc_per_node 2`` of
``bench.ablate`` on the CPU (gloo) trains each run data-parallel on the shards of one global batch and ends where one
process with that batch ends, resumes from a checkpoint that one process wrote, and records every run once, rank 0
alone writing."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState

from bench.ablate import check_distributed
from bench.config.cell import preset
from bench.core.records import read_rows
from bench.grid import study as gs
import bench.grid.jobrun
from bench.grid.plan import Job
from bench.training.checkpoint import CHECKPOINT
import bench.training.distributed
from bench.training.distributed import shard
from helpers import run

ROOT = Path(__file__).resolve().parent.parent
# the smoke grid (mse, kl) × 1 seed: 4 steps of a global batch of 4 crops of 32 px (2 per process), a validation
# and a checkpoint every 2 steps
CMD = ["--grid", "smoke", "--seeds", "1", "--folds", "1", "--steps", "4", "--set", "size=32", "--set", "crop=32",
       "--set", "eval_size=32", "--set", "batch_size=4", "--set", "val_every=2", "--set", "checkpoint_every=2",
       "--device", "cpu", "--no-progress"]
# What may differ is float rounding only: the two shards' gradients are averaged instead of one batch's summed, and
# BatchNorm's global statistics are summed in float64 over the ranks instead of float32 in one process. Measured on
# this project's CPU: 1.7e-7 (relative) on the mse run's final loss, 0 on kl's, and validation PSNRs equal. The
# bugs this must catch are far above the tolerance: unsynchronised BatchNorm (each rank normalising its own 2 crops)
# moved the final losses by 3.9e-4 (mse, 2 steps data-parallel) and 1.0e-4 (kl, 4 steps) and the mse validation PSNR
# by 1.5e-3 dB; both ranks training on the same half of the batch moved them by 0.10 and 6.2e-3.
REL_TOL, PSNR_TOL = 1e-5, 1e-4


def test_shards_of_the_ranks_in_order_are_the_global_batch():
    batch = torch.arange(24).view(6, 2, 2)
    for world in (1, 2, 3, 6):
        parts = [shard(batch, r, world) for r in range(world)]
        assert all(len(p) == 6 // world for p in parts)
        assert torch.equal(torch.cat(parts), batch)
    assert shard(batch, 0, 1) is batch and shard(None, 1, 2) is None
    with pytest.raises(ValueError, match="cannot be split evenly over 4"):
        shard(batch, 0, 4)


def torchrun(*args: str) -> subprocess.CompletedProcess:
    """``python -m torch.distributed.run --nproc_per_node 2 ARGS`` on the CPU, one thread per process."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE", "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": str(ROOT)}
    if sys.platform == "linux":
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")  # gloo on the loopback, whatever the host name resolves to
    with socket.socket() as s:  # a free port for the rendezvous
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr",
                           "127.0.0.1", "--master_port", str(port), *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)


def test_what_data_parallel_training_cannot_reproduce_is_refused(monkeypatch):
    base = preset("quick")
    jobs = [Job("unet_vgg16", "mse", base.replace(loss="mse", batch_size=4))]
    check_distributed(jobs)  # one process: nothing to refuse
    monkeypatch.setattr(bench.training.distributed, "world_size", lambda: 2)
    check_distributed(jobs)
    with pytest.raises(ValueError, match="batch_size 5 .* not a multiple of the 2 torchrun processes"):
        check_distributed([jobs[0]._replace(cfg=base.replace(batch_size=5))])
    with pytest.raises(ValueError, match="cell gan: loss mse\\+0.01\\*wgan_gp trains its own network"):
        check_distributed([Job("unet_vgg16", "gan", base.replace(loss="mse+0.01*wgan_gp", batch_size=4))])


def plant_checkpoint(monkeypatch, into: Path, cell: str, at: int) -> None:
    """Make this process's runs copy ``cell``'s checkpoint of step ``at`` into the run folder ``into`` (the same
    place under it), as if a worker there had been killed after writing it."""
    train = bench.grid.jobrun.JobTrainer.train

    def copying(self, job, prep, on_validation=None, retry=False):
        def hook(step, val_psnr):
            if on_validation is not None:
                on_validation(step, val_psnr)
            if job.cell == cell and step == at:  # the checkpoint of this step is written before this hook runs
                ckpt = self.folder_of(job) / CHECKPOINT
                target = into / ckpt.relative_to(self.run_dir)
                target.parent.mkdir(parents=True)
                shutil.copy(ckpt, target)

        return train(self, job, prep, hook, retry)

    monkeypatch.setattr(bench.grid.jobrun.JobTrainer, "train", copying)


def test_two_processes_train_each_run_once_as_one_process_with_their_global_batch(tmp_path, monkeypatch, capsys):
    """Also, in the same torchrun group (``tests/distributed_worker.py``): BatchNorm over two ranks' halves equals it
    over the whole batch (values and gradients), rank 0's messages reach rank 1, and an exception of rank 0's
    validation hook stops both ranks."""
    one, two = tmp_path / "one", tmp_path / "two"
    plant_checkpoint(monkeypatch, two, "mse", 2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each torchrun process
    try:
        rc, _, err = run([*CMD, "--out", one], capsys)
    finally:
        torch.set_num_threads(threads)
    assert rc == 0, err
    assert list(two.rglob(CHECKPOINT)), "no checkpoint planted"

    # tests/distributed_worker.py checks the group's BatchNorm and messages first, then runs bench.ablate's main
    proc = torchrun(str(ROOT / "tests" / "distributed_worker.py"), *CMD, "--out", str(two))
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    assert "rank 0: ok" in log and "rank 1: ok" in log, log[-3000:]
    # rank 0 resumed the mse run from the planted step-2 checkpoint (and said so once); kl trained from step 0
    assert log.count("resuming from the checkpoint of step 2") == 1, log[-3000:]
    assert "1 of them resumed from a checkpoint: 2 of their 4 steps trained here" in log, log[-3000:]

    ref = {r["cell"]: r for r in read_rows(one / "runs.csv")}
    rows = read_rows(two / "runs.csv")
    trained = [r for r in rows if r["model"] != "(none)"]
    assert sorted(r["cell"] for r in trained) == ["kl", "mse"]  # each run recorded once
    assert sorted(r["cell"] for r in rows if r["model"] == "(none)") == ["grey", "mean_colour", "oracle_tint"]
    for r in trained:
        assert r["status"] == "ok" and r["world_size"] == "2", r
        assert r["resumed_from_step"] == ("2" if r["cell"] == "mse" else "0")
        assert float(r["final_loss"]) == pytest.approx(float(ref[r["cell"]]["final_loss"]), rel=REL_TOL)
        assert float(r["val_psnr"]) == pytest.approx(float(ref[r["cell"]]["val_psnr"]), abs=PSNR_TOL)
    assert {r["world_size"] for r in ref.values()} == {"1"}
    history = read_rows(two / "history.csv")  # rank 0's validations only, once each
    assert sorted((h["cell"], h["step"]) for h in history) == [("kl", "2"), ("kl", "4"), ("mse", "2"), ("mse", "4")]

    name = json.loads((two / "run.json").read_text())["study"]
    study = optuna.load_study(study_name=name, storage=gs.open_storage(two / "study.journal"))
    states = [t.state for t in study.get_trials(deepcopy=False)]
    assert states == [TrialState.COMPLETE] * 2, states  # one trial per run, claimed by rank 0 alone
    assert not list(two.rglob(CHECKPOINT))
