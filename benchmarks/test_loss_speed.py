"""What each loss costs: the training step (``bench.training.loop.TrainStep``) with one loss after another, same model,
batch and crops (pytest-benchmark suite, not part of the default test run).

    pytest benchmarks/test_loss_speed.py --benchmark-only
    pytest benchmarks/test_loss_speed.py --benchmark-only --benchmark-json=results/loss-speed.json
    BENCH_LOSSES=mse,lpips pytest benchmarks/test_loss_speed.py --benchmark-only

Sizes are the device's preset (``quick`` on the CPU: width 0.25, 64-px crops, batch 16; ``paper`` on CUDA). The
VGG-16 of ``lpips``/``perceptual`` is a seeded random one (same cost as ImageNet weights, and no checkpoint is
needed). Images per second go to ``extra_info["img_per_s"]`` and the table shows the time per step; compare with
``mse``, the cheapest.
"""
from __future__ import annotations

import os

import pytest
import torch

from bench.config.cell import preset
from bench.throughput import Setup, TimedTrain, synthetic_batches
from bench.training.loop import make_step

DEVICE = torch.device(os.environ.get("BENCH_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu"))
CUDA = DEVICE.type == "cuda"
BASE = preset("paper" if CUDA else "quick")

#: benchmark id → (loss spec, loss parameters)
LOSSES = {
    "mse": ("mse", {}),
    "l1_rgb": ("l1", {"space": "rgb"}),
    "mse_rgb": ("mse", {"space": "rgb"}),
    "kl": ("kl", {}),
    "perceptual": ("perceptual", {}),
    "lpips": ("lpips", {}),
    "mse+0.01*wgan_gp": ("mse+0.01*wgan_gp", {}),
    "mse+0.01*wgan_gp(5 critic steps)": ("mse+0.01*wgan_gp", {"critic_steps": 5}),
}
SELECTED = [k for k in os.environ.get("BENCH_LOSSES", ",".join(LOSSES)).split(",") if k]


class LossStep(TimedTrain):
    """``TimedTrain`` (the training step on a synthetic batch already on the device) with a loss's parameters and
    the random LPIPS/perceptual backbone."""

    def __init__(self, setup: Setup, loss_params: dict):
        self.setup, self.batches, self.k = setup, synthetic_batches(setup), 0
        cfg = setup.cell().replace(lpips_backbone="random", loss_params=loss_params)
        self.step = make_step(cfg, setup.dev)
        self.net = self.step.model


@pytest.mark.parametrize("name", SELECTED)
def test_train_step_with_loss(benchmark, name):
    spec, params = LOSSES[name]
    setup = Setup(model=BASE.model, batch=BASE.batch_size, size=BASE.crop, width=BASE.width,
                  precision="bf16" if CUDA else "fp32", loss=spec, device=str(DEVICE))
    step = LossStep(setup, params)

    def call():
        step()
        if CUDA:
            torch.cuda.synchronize(DEVICE)

    benchmark.extra_info.update(device=str(DEVICE), loss=spec, loss_params=params, batch=setup.batch,
                                size=setup.size, width=setup.width)
    benchmark.pedantic(call, rounds=5 if not CUDA else 20, warmup_rounds=2 if not CUDA else 10, iterations=1)
    if benchmark.stats is not None:  # None under --benchmark-disable (a plain run of each step, as a smoke test)
        benchmark.extra_info["img_per_s"] = setup.batch / benchmark.stats.stats.median
