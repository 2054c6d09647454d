"""Learning-rate schedules (``lr_schedule``, ``warmup_steps``) in the one training step, checked against torch's own
schedulers; the ``study`` preset; earlier configurations keep their flat form (hashes, run folders)."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from bench.config import grids
from bench.config.cell import LATER_FIELDS, PRESETS, CellConfig, preset
from bench.data.sources import CropSchedule
from bench.grid.plan import plan_jobs
from bench.training.loop import make_step, prepare


def _reference(schedule: str, steps: int, warmup: int, lr: float) -> list[float]:
    """The learning rate of each step from torch.optim.lr_scheduler (LinearLR warm-up, then cosine or
    polynomial-1 decay)."""
    def stepped(make, n):
        opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
        sched, out = make(opt), []
        for _ in range(n):
            out.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        return out

    head = stepped(lambda o: torch.optim.lr_scheduler.LinearLR(o, 1 / warmup, 1.0, warmup - 1), warmup) if warmup else []
    decay = {"constant": lambda o: torch.optim.lr_scheduler.ConstantLR(o, 1.0),
             "cosine": lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, steps - warmup),
             "linear": lambda o: torch.optim.lr_scheduler.PolynomialLR(o, steps - warmup, 1.0)}[schedule]
    return head + stepped(decay, steps - warmup)


@pytest.fixture(scope="module")
def prep():
    return prepare(preset("quick").replace(size=32, crop=32, eval_size=32), None, None, None)


@pytest.mark.parametrize("schedule,warmup", [("cosine", 3), ("linear", 0), ("constant", 2), ("cosine", 0)])
def test_train_step_follows_the_schedule(prep, schedule, warmup):
    cfg = preset("quick").replace(size=32, crop=32, eval_size=32, batch_size=2, steps=8, lr=1e-3,
                                  lr_schedule=schedule, warmup_steps=warmup)
    cfg.validate()
    step = make_step(cfg, torch.device("cpu"), prep)
    crops = CropSchedule(prep.train, cfg.crop, cfg.crop_seed)
    seen = []
    for k in range(cfg.steps):
        step(crops.batch(k, cfg.batch_size))
        seen.append(step.opt.param_groups[0]["lr"])  # the rate Adam used for step k
    assert seen == pytest.approx(_reference(schedule, cfg.steps, warmup, cfg.lr), rel=1e-9, abs=1e-12)


def test_constant_schedule_leaves_the_learning_rate_alone(prep):
    step = make_step(preset("quick"), torch.device("cpu"), prep)
    assert step.lr_at is None


def test_bad_schedules_are_refused():
    with pytest.raises(ValueError, match="lr_schedule"):
        preset("quick").replace(lr_schedule="step").validate()
    with pytest.raises(ValueError, match="warmup_steps"):
        preset("quick").replace(warmup_steps=30).validate()
    with pytest.raises(ValueError, match="warmup_steps"):
        preset("quick").replace(warmup_steps=-1).validate()


@pytest.mark.parametrize("name", [n for n in PRESETS if not set(PRESETS[n]) & set(LATER_FIELDS)])
def test_earlier_presets_keep_their_flat_form(name):
    """Fields added later are absent at their defaults: the flat form, hence config hashes, run folders and study
    names of the earlier presets are what they were before the fields existed."""
    cfg = preset(name)
    before = [f.name for f in dataclasses.fields(CellConfig) if f.name not in LATER_FIELDS]
    assert list(cfg.to_flat()) == before
    assert cfg.replace(lr_schedule="cosine", warmup_steps=5).to_flat()["lr_schedule"] == "cosine"


def test_study_preset_plans_the_losses_grid_with_two_seeds():
    base = preset("study")
    jobs = plan_jobs(grids.get("losses"), base, ["unet_vgg16"], seeds=2)
    assert len(jobs) == 2 * len(grids.get("losses").cells)
    assert {j.cfg.lr_schedule for j in jobs} == {"cosine"}
    assert all(0 < j.cfg.warmup_steps < j.cfg.steps for j in jobs)
    assert base.to_flat()["lr_schedule"] == "cosine"

