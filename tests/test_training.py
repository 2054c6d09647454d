"""Training one cell (``bench.training.loop``): fixed crops shared by every cell, reproducibility, divergence, on real
photos (the bundled Kodak24), and the one training step that bench.throughput times.

Tiny settings: width 0.25, 32-px images and crops, batches of 4, 3 steps.
"""
from __future__ import annotations

import copy
import hashlib

import pytest
import torch

from bench.config.cell import preset
from bench.data.sources import CropSchedule
from bench.training.loop import DivergenceError, prepare, train_cell

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def cfg():
    return preset("quick").replace(size=32, crop=32, eval_size=32, batch_size=4, steps=3, val_every=2)


@pytest.fixture(scope="module")
def prep(cfg):
    """The bundled Kodak24 (15 train / 3 validation / 6 test), no data set needed."""
    return prepare(cfg, None, None, None)


@pytest.fixture
def batch_log(monkeypatch):
    """Records the SHA-256 of every training batch the trainer draws from its ``CropSchedule``."""
    log: list[str] = []
    original = CropSchedule.batch

    def logged(self, k, batch_size, view=0):
        out = original(self, k, batch_size, view)
        log.append(hashlib.sha256(out.contiguous().numpy().tobytes()).hexdigest())
        return out

    monkeypatch.setattr(CropSchedule, "batch", logged)
    return log


def test_prepared_data(prep, cfg):
    assert (len(prep.train), len(prep.val_images), len(prep.test_images)) == (15, 3, 6)
    assert prep.val_images.shape[1:] == prep.test_images.shape[1:] == (3, 32, 32)
    assert prep.val_images.dtype == torch.uint8 and not prep.skipped


def test_cells_with_different_losses_and_seeds_see_byte_identical_batches(prep, cfg, batch_log):
    """An MSE cell with training seed 0 and a KL cell with seed 1 train on the same bytes, batch for batch; and
    those are the schedule's own batches for the shared crop seed."""
    res_a = train_cell(cfg.replace(loss="mse", seed=0), prep, CPU, progress=False)
    seen_a = list(batch_log)
    batch_log.clear()
    res_b = train_cell(cfg.replace(loss="kl", seed=1), prep, CPU, progress=False)
    seen_b = list(batch_log)
    assert len(seen_a) == cfg.steps and seen_a == seen_b
    assert len(set(seen_a)) == cfg.steps  # consecutive batches differ
    batch_log.clear()
    sched = CropSchedule(prep.train, cfg.crop, cfg.crop_seed)
    direct = [sched.batch(k, cfg.batch_size) for k in range(cfg.steps)]
    assert batch_log == seen_a
    # ... and another crop seed would have given other batches
    other = CropSchedule(prep.train, cfg.crop, cfg.crop_seed + 1).batch(0, cfg.batch_size)
    assert not torch.equal(other, direct[0])
    # the two cells really are different models (different losses / initialisations)
    assert res_a["metrics"]["psnr"] != res_b["metrics"]["psnr"]


def test_same_cell_and_seed_twice_gives_the_same_psnr(prep, cfg):
    c = cfg.replace(loss="l1", seed=3)
    a = train_cell(c, prep, CPU, progress=False)
    b = train_cell(c, prep, CPU, progress=False)
    assert a["metrics"]["psnr"] == pytest.approx(b["metrics"]["psnr"], abs=0.01)
    assert a["per_image"]["psnr"] == pytest.approx(b["per_image"]["psnr"], abs=0.01)
    assert [h["train_loss"] for h in a["history"]] == pytest.approx([h["train_loss"] for h in b["history"]], rel=1e-5)
    c2 = train_cell(c.replace(seed=4), prep, CPU, progress=False)
    assert c2["metrics"]["psnr"] != a["metrics"]["psnr"]  # the seed does change the initialisation


def test_result_contents(prep, cfg):
    res = train_cell(cfg.replace(loss="kl", loss_params={"rebalance": True}), prep, CPU, progress=False)
    m = res["metrics"]
    for key in ("psnr", "ssim", "colourfulness", "val_psnr", "final_loss", "train_time_s", "eval_time_s"):
        assert torch.isfinite(torch.tensor(float(m[key]))), key
    assert [h["step"] for h in res["history"]] == [2, 3]  # val_every=2, and the last step
    assert len(res["per_image"]["psnr"]) == len(prep.test_images)
    assert m["psnr"] == pytest.approx(sum(res["per_image"]["psnr"]) / len(prep.test_images))
    assert res["encoder_pretrained"] is False
    assert 10 < m["psnr"] < 50


def test_divergence_raises_with_the_step(prep, cfg):
    """With lr = 1e30 the first update blows the weights up: the loss of step 2 is NaN/inf."""
    with pytest.raises(DivergenceError) as err:
        train_cell(cfg.replace(loss="mse", lr=1e30), prep, CPU, progress=False)
    assert err.value.step == 2
    assert "nan" in err.value.reason.lower() or "inf" in err.value.reason.lower()


# ------------------------------------------------------------------------------------ the one training step


def test_throughput_times_the_step_training_runs(prep):
    """bench.throughput's timed step and train_cell give the same losses on the same batches and seed: they are
    one step, not two implementations."""
    from bench import throughput

    setup = throughput.Setup(model="unet_vgg16", batch=4, size=32, width=0.125, loss="l1", device="cpu")
    cfg = setup.cell().replace(steps=3, val_every=1)
    trained = [h["train_loss"] for h in train_cell(cfg, prep, CPU, progress=False)["history"]]
    timed = throughput.TimedTrain(setup, throughput.image_batches(setup, prep.splits.train))
    assert [timed().item() for _ in range(3)] == pytest.approx(trained, rel=1e-6)
    assert len(set(trained)) == 3  # the optimiser did move between steps


class _Counting(torch.nn.Module):
    """An L1 loss with an ``extra_step`` hook that records what the training step hands it."""

    head = "ab"

    def __init__(self):
        super().__init__()
        self.calls = []

    def extra_step(self, pred, target_ab, **ctx):
        self.calls.append((pred.requires_grad, tuple(pred.shape), tuple(target_ab.shape), sorted(ctx)))

    def forward(self, pred, target_ab, **ctx):
        return (pred - target_ab).abs().mean() / 110


@pytest.mark.parametrize("composite", [False, True])
def test_step_calls_the_loss_hook_and_checks_divergence(prep, composite):
    from bench.training.loop import TrainStep
    import losses
    import models

    torch.manual_seed(0)
    net = models.build("unet_vgg16", head="ab", width=0.125, encoder_weights="none")
    term = _Counting()
    crit = losses.CompositeLoss([(1.0, term), (0.5, losses.build("mse"))], "x") if composite else term
    step = TrainStep(net, crit, CPU, lr=1e-3, check_every=2)
    sched = CropSchedule(prep.train, 32, 0)
    for k in range(3):
        step(sched.batch(k, 2))
    assert step.step == 3 and term.calls == [(False, (2, 2, 32, 32), (2, 2, 32, 32), ["L", "model", "rgb"])] * 3
    assert torch.isfinite(torch.tensor(step.check()))
    step(sched.batch(3, 2))  # step 4: read back (every 2)
    # a NaN loss is reported with its own step at the next read-back, not the step of the read-back
    step.criterion = lambda *a, **k: torch.tensor(float("nan"), requires_grad=True)
    step(sched.batch(4, 2))  # step 5, NaN, not read back yet
    with pytest.raises(DivergenceError) as err:
        step(sched.batch(5, 2))  # step 6 reads back steps 5 and 6
    assert err.value.step == 5 and step.step == 6


def test_step_state_dict_resumes_exactly(prep):
    """Model, optimiser and step count round-trip through state_dict(): a restored step continues identically."""
    from bench.training.loop import make_step

    cfg = preset("quick").replace(width=0.125, size=32, crop=32, eval_size=32, batch_size=2, lr=1e-3)
    sched = CropSchedule(prep.train, 32, 0)
    a = make_step(cfg, CPU)
    for k in range(2):
        a(sched.batch(k, 2))
    saved = copy.deepcopy(a.state_dict())
    next_a = a(sched.batch(2, 2)).item()
    b = make_step(cfg.replace(seed=5), CPU)  # another initialisation, then the saved state
    b.load_state_dict(saved)
    assert b.step == 2 and b(sched.batch(2, 2)).item() == pytest.approx(next_a, rel=1e-6)
