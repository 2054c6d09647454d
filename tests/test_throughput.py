"""bench.throughput on the CPU with a small model: finite, positive rates in the CSV."""
from __future__ import annotations

import csv
import math

import pytest
import torch

from bench import throughput
from bench.core import records

SMALL = ["--crop", "32", "--batch", "2", "--width", "0.125", "--warmup", "1", "--repeats", "2", "--iters", "1",
         "--device", "cpu"]


def _rows(folder):
    files = list(folder.glob("throughput-*.csv"))
    assert len(files) == 1 and files[0].name.startswith("throughput-cpu")
    with open(files[0], newline="") as fh:
        return list(csv.DictReader(fh))


def _positive(row, *cols):
    for c in cols:
        v = float(row[c])
        assert math.isfinite(v) and v > 0, (c, row[c])


def test_throughput_csv_has_finite_positive_rates(tmp_path, capsys):
    assert throughput.main([*SMALL, "--out", str(tmp_path)]) == 0
    (row,) = _rows(tmp_path)
    assert row["mode"] == "step" and row["model"] == "unet_vgg16" and row["device"] == "cpu"
    _positive(row, "train_img_per_s", "infer_img_per_s", "train_ms_per_step", "train_peak_mib",
              "train_gflop_per_img", "infer_gflop_per_img", "train_tflop_per_s")
    # a training step (forward + backward) costs about 3× the forward pass
    assert 2 < float(row["train_gflop_per_img"]) / float(row["infer_gflop_per_img"]) < 4
    assert row["torch"] and torch.__version__.startswith(row["torch"]) and row["timestamp"] and row["git_commit"]
    assert "train_img_per_s" in capsys.readouterr().out


def test_end_to_end_and_pipeline_hook(tmp_path, monkeypatch, capsys):
    calls = []

    def compare(files, size, crop, n_images, batch_size):
        calls.append((len(files), size, crop, n_images, batch_size))
        return {"naive_img_per_s": 10.0, "fast_img_per_s": 40.0, "speedup": 4.0}

    monkeypatch.setattr(throughput.pipeline, "compare", compare)
    assert throughput.main([*SMALL, "--end-to-end", "--pipeline", "--n-images", "6", "--out", str(tmp_path)]) == 0
    rows = {r["mode"]: r for r in _rows(tmp_path)}
    assert set(rows) == {"e2e-images", "e2e-synthetic", "e2e-images-fp32-b16", "pipeline"}
    for mode in ("e2e-images", "e2e-synthetic", "e2e-images-fp32-b16"):
        _positive(rows[mode], "train_img_per_s")
    assert rows["e2e-images-fp32-b16"]["batch"] == "16" and rows["e2e-images-fp32-b16"]["precision"] == "fp32"
    assert float(rows["e2e-images"]["ratio"]) == pytest.approx(
        float(rows["e2e-images"]["train_img_per_s"]) / float(rows["e2e-synthetic"]["train_img_per_s"]))
    assert calls == [(6, 64, 32, 6, 2)] and rows["pipeline"]["speedup"] == "4.0"  # quick preset: shorter side 64
    out = capsys.readouterr().out
    assert "ratio" in out and "speedup 4.0" in out


def test_compile_on_the_cpu_is_a_usage_error(tmp_path, capsys):
    """Training compiles on CUDA only, so the measured step would not be the trained one: refused, nothing written."""
    assert throughput.main([*SMALL, "--compile", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "CUDA" in err and len(err.strip().splitlines()) == 1
    assert not list(tmp_path.glob("*.csv"))


def test_time_calls_counts_and_device_slug():
    n = []
    secs = throughput.time_calls(lambda: n.append(1), "cpu", warmup=2, repeats=3, iters=4)
    assert len(secs) == 3 and len(n) == 2 + 3 * 4 and all(s >= 0 for s in secs)
    assert records.device_slug("cuda", "NVIDIA H100 80GB HBM3") == "nvidia-h100-80gb-hbm3"
    assert records.device_slug("cpu", "x86_64 (2 cores, 2 threads)") == "cpu-x86-64-2-cores"
    # CPU models differ in the file name (they used to share "cpu-x86-64")
    xeon = records.device_slug("cpu", "Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz (x86_64, 8 cores, 8 threads)")
    epyc = records.device_slug("cpu", "AMD EPYC 7763 64-Core Processor (x86_64, 8 cores, 8 threads)")
    assert xeon == "cpu-intel-xeon-gold-6338-cpu-2-00ghz-8-cores" and epyc.startswith("cpu-amd-epyc-7763")
    assert records.device_slug("cpu") == records.device_slug("cpu", records.device_name("cpu"))
    assert records.cpu_model() in records.device_name("cpu")
