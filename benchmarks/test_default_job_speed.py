"""Speed of the default main job's training step: every cell of the ``losses`` grid under the ``quick`` preset, on
the bundled Kodak24 crops of fold 0, through ``bench.training.loop.TrainStep`` (the one step that ``train_cell`` runs).

    pytest benchmarks/test_default_job_speed.py --benchmark-only
    pytest benchmarks/test_default_job_speed.py --benchmark-only --benchmark-json=results/default-step.json

Each call is one optimisation step on a batch of real crops (uint8 → Lab → model → loss → Adam); ``img_per_s`` in
``extra_info`` is the batch size over the median time. The cells differ: the KL cells decode 261 bin logits per
pixel and ``mse+adain_style`` runs a VGG-19 on prediction and truth, so the sum over cells, not one cell's rate,
sets the default job's wall time (``results/default-job-cpu.md``).
"""
from __future__ import annotations

import itertools

import pytest
import torch

from bench.config import grids
from bench.config.cell import preset
from bench.data.sources import CropSchedule
from bench.training.loop import make_step, prepare_folds

DEVICE = torch.device("cpu")
BASE = preset("quick")
CELLS = grids.get("losses").cells


@pytest.fixture(scope="module")
def fold0():
    return prepare_folds(BASE)[0]


@pytest.mark.parametrize("cell", CELLS, ids=[c.name for c in CELLS])
def test_quick_train_step(benchmark, fold0, cell):
    cfg = BASE.replace(**cell.changes)
    step = make_step(cfg, DEVICE, fold0)
    schedule = CropSchedule(fold0.train, cfg.crop, cfg.crop_seed)
    batches = itertools.cycle([schedule.batch(k, cfg.batch_size) for k in range(4)])

    def one_step():
        step(next(batches))
        step.check()  # reads the loss back, as training on the CPU does every step

    benchmark.extra_info.update(cell=cell.name, batch=cfg.batch_size, crop=cfg.crop, width=cfg.width,
                                threads=torch.get_num_threads())
    benchmark.pedantic(one_step, rounds=5, warmup_rounds=2, iterations=1)
    benchmark.extra_info["img_per_s"] = cfg.batch_size / benchmark.stats.stats.median
