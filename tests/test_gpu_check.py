"""benchmarks/gpu_check.sh in its tiny CPU mode runs every stage to the end and writes what a GPU run would bring
back (so the prepared GPU check cannot rot while no GPU is at hand)."""
from __future__ import annotations

import csv
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def check(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check")
    env = {**os.environ, "PYTHON": sys.executable, "COLORBENCH_GIT_COMMIT": "0123abc-test"}
    env.pop("OUT", None)
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--tiny", "--out", str(out),
                           "--budget", "900"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    return proc, out


def _csv(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_every_stage_finishes(check):
    proc, out = check
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = (out / "summary.md").read_text()
    for stage in ("tp_bf16", "tp_fp32", "loader", "profile", "ablate"):
        assert f"| {stage} |" in summary and [ln for ln in summary.splitlines()
                                              if ln.startswith(f"| {stage} |")][0].split("|")[3].strip() == "ok"
    assert "| tp_bf16_compile |" in summary and "skipped" in summary  # no torch.compile on the CPU


def test_files_fit_the_device_tool_and_name_the_machine(check):
    _, out = check
    files = sorted(p.name for p in out.iterdir())
    assert files == sorted(["summary.md", "throughput.csv", "profile.txt", "leaderboard.md", "runs.csv",
                            "ablate-run.tar.gz", "logs.txt"])
    assert len(files) <= 8  # what the GPU tool brings back
    for name in ("summary.md", "profile.txt", "leaderboard.md", "logs.txt"):
        text = (out / name).read_text()
        assert "0123abc-test" in text and torch.__version__ in text and "driver:" in text, name
    for name in ("throughput.csv", "runs.csv"):
        rows = _csv(out / name)
        assert rows and all(r["check_git_commit"] == "0123abc-test" and r["check_torch"] == torch.__version__
                            and r["check_card"] and r["check_driver"] for r in rows), name
        assert all(r["git_commit"] == "0123abc-test" for r in rows), name  # the rows' own environment columns too


def test_throughput_rows(check):
    _, out = check
    rows = _csv(out / "throughput.csv")
    got = {(r["mode"], r["precision"], r["batch"]) for r in rows}
    assert got == {("e2e-images", "bf16", "4"), ("e2e-synthetic", "bf16", "4"),
                   ("e2e-images", "fp32", "2"), ("e2e-synthetic", "fp32", "2")}
    for r in rows:
        for col in ("train_img_per_s", "train_peak_mib", "train_gflop_per_img", "train_tflop_per_s"):
            assert float(r[col]) > 0, (col, r)
        if r["mode"] == "e2e-images":
            assert float(r["ratio"]) > 0
    summary = (out / "summary.md").read_text()
    assert "| bf16 | 4 | False |" in summary and "| fp32 | 2 | False |" in summary
    starve = summary.split("## Does the GPU starve?")[1].split("##")[0]
    assert "| 0 |" in starve and "| 1 |" in starve and "| e2e-images | bf16 | 4 |" in starve


def test_profile_and_training(check):
    _, out = check
    assert "train_step" in (out / "profile.txt").read_text()
    runs = _csv(out / "runs.csv")
    trained = {r["cell"]: r for r in runs if r["model"] != "(none)"}
    assert set(trained) == {"mse", "kl"} and all(r["status"] == "ok" for r in trained.values())
    assert all(r["steps"] == "2" and r["encoder_pretrained"] in ("False", "false", "0") for r in trained.values())
    board = (out / "leaderboard.md").read_text()
    assert "mse" in board and "kl" in board
    with tarfile.open(out / "ablate-run.tar.gz") as tar:
        names = tar.getnames()
    assert any(n.endswith("/runs.csv") for n in names) and any(n.endswith("/gpu_check.json") for n in names)
