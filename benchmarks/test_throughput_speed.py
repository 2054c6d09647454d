"""Throughput as a pytest-benchmark suite (not part of the default test run: ``testpaths`` is ``tests``).

    pytest benchmarks/ --benchmark-only
    pytest benchmarks/ --benchmark-only --benchmark-json=results/bench.json
    BENCH_MODELS=unet_vgg16,unet_vgg19 BENCH_BATCH=32 pytest benchmarks/ --benchmark-only

The steps are those of ``bench.throughput`` (synthetic data already on the device). Sizes default to the preset
of the device: ``quick`` on the CPU (width 0.25, 64 px), ``paper`` on CUDA (width 1.0, 256 px, bf16 autocast).
pytest-benchmark times with the wall clock, so on CUDA each call ends with ``torch.cuda.synchronize()``: slightly
slower than ``python -m bench.throughput``, which synchronises once per timing (CUDA events).
"""
from __future__ import annotations

import os

import pytest
import torch

from bench.config.cell import preset
from bench.throughput import InferStep, Setup, TimedTrain, synthetic_batches

DEVICE = torch.device(os.environ.get("BENCH_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu"))
CUDA = DEVICE.type == "cuda"
BASE = preset("paper" if CUDA else "quick")
MODELS = os.environ.get("BENCH_MODELS", BASE.model).split(",")


def _setup(model: str) -> Setup:
    return Setup(model=model, batch=int(os.environ.get("BENCH_BATCH", BASE.batch_size)),
                 size=int(os.environ.get("BENCH_SIZE", BASE.crop)), width=float(os.environ.get("BENCH_WIDTH", BASE.width)),
                 precision=os.environ.get("BENCH_PRECISION", "bf16" if CUDA else "fp32"),
                 compile=os.environ.get("BENCH_COMPILE", "") == "1", device=str(DEVICE))


def _synced(fn):
    def call():
        fn()
        if CUDA:
            torch.cuda.synchronize(DEVICE)
    return call


def _run(benchmark, step, setup: Setup):
    flops = step.flops_per_image()
    benchmark.extra_info.update(device=str(DEVICE), batch=setup.batch, size=setup.size, width=setup.width,
                                precision=setup.precision, gflop_per_img=flops / 1e9)
    benchmark.pedantic(_synced(step), rounds=5 if not CUDA else 20, warmup_rounds=2 if not CUDA else 10, iterations=1)
    per_call = benchmark.stats.stats.median
    benchmark.extra_info["img_per_s"] = setup.batch / per_call
    benchmark.extra_info["tflop_per_s"] = flops * setup.batch / per_call / 1e12


@pytest.mark.parametrize("model", MODELS)
def test_train_step(benchmark, model):
    setup = _setup(model)
    _run(benchmark, TimedTrain(setup, synthetic_batches(setup)), setup)


@pytest.mark.parametrize("model", MODELS)
def test_inference(benchmark, model):
    setup = _setup(model)
    _run(benchmark, InferStep(setup), setup)
