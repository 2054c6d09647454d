"""The harness's training step against a hand-written PyTorch loop of the same network, loss, batch and threads,
timed interleaved in one process (``benchmarks/step_vs_plain.py``; results/step-speed-cpu.md).

    pytest benchmarks/test_step_vs_plain.py --benchmark-only

The benchmark's own timing is the harness step; ``extra_info`` holds the interleaved medians of all three sides
and ``harness/plain`` (goal ≥ 0.9).
"""
from __future__ import annotations

import pytest
import torch
from step_vs_plain import compare

from bench.config.cell import preset
from bench.training.loop import prepare_folds

BASE = preset("quick")


@pytest.fixture(scope="module")
def fold0():
    return prepare_folds(BASE)[0]


@pytest.mark.parametrize("cell", ["mse", "kl"])
def test_harness_vs_plain(benchmark, fold0, cell):
    res = benchmark.pedantic(compare, args=(cell, BASE, fold0), kwargs={"rounds": 10}, rounds=1, iterations=1)
    benchmark.extra_info.update({k: v for k, v in res.items()}, threads=torch.get_num_threads())
