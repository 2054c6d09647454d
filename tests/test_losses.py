"""Every registered loss, parametrized over ``losses.available()``: a newly registered loss is tested for free.

Each loss gets ``loss(pred, target_ab, L=L, rgb=rgb)`` on tiny real crops (2×…×32×32, so that losses with a VGG
inside stay cheap): ab heads get ``B×2×H×W`` predictions, bins heads ``B×Q×H×W`` logits with ``Q = ABBins().n_bins``.
The built-in pixel losses are also checked against numpy formulas.
"""
from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch

import losses
from bench.abbins import ABBins
from bench.colour import split_lab

ALL = losses.available()
N_BINS = ABBins().n_bins


@pytest.fixture(scope="module")
def sample(real_batch):
    """Two real 32×32 crops: (rgb in [0, 1], L, ab)."""
    rgb = real_batch[:2, :, 16:48, 16:48].float() / 255.0
    L, ab = split_lab(rgb)
    return rgb, L, ab


def _pred(name: str, ab: torch.Tensor, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    B, _, H, W = ab.shape
    if losses.get_class(name).head == "bins":
        return torch.randn(B, N_BINS, H, W, generator=g).requires_grad_(True)
    return (ab + 20 * torch.randn(ab.shape, generator=g)).requires_grad_(True)


def _accepts(name: str, param: str) -> bool:
    sig = inspect.signature(losses.get_class(name).__init__).parameters
    return param in sig or any(p.kind == p.VAR_KEYWORD for p in sig.values())


def test_registry_lists_the_builtin_losses():
    assert {"mse", "l1", "huber", "kl"} <= set(ALL)
    assert ALL == sorted(ALL)
    with pytest.raises(ValueError, match="available: .*mse"):
        losses.get_class("nope")


@pytest.mark.parametrize("name", ALL)
def test_head_is_declared(name):
    assert losses.get_class(name).head in ("ab", "bins")
    assert losses.head_of(name) == losses.get_class(name).head


@pytest.mark.parametrize("name", ALL)
def test_scalar_finite_value_and_gradient(name, sample):
    rgb, L, ab = sample
    crit = losses.build(name)
    pred = _pred(name, ab)
    loss = crit(pred, ab, L=L, rgb=rgb)
    assert loss.ndim == 0
    assert torch.isfinite(loss)
    assert loss.item() >= 0
    loss.backward()
    assert pred.grad is not None and pred.grad.shape == pred.shape
    assert torch.isfinite(pred.grad).all()
    assert pred.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ALL)
def test_reduction(name, sample):
    """``none`` keeps one value per element (batch first); ``mean`` and ``sum`` are its mean and sum."""
    if not _accepts(name, "reduction"):
        pytest.skip(f"{name} takes no reduction argument")
    rgb, L, ab = sample
    pred = _pred(name, ab).detach()
    vals = {r: losses.build(name, reduction=r)(pred, ab, L=L, rgb=rgb) for r in ("mean", "sum", "none")}
    none = vals["none"]
    assert none.ndim >= 1 and none.shape[0] == ab.shape[0]
    assert torch.isfinite(none).all()
    torch.testing.assert_close(vals["mean"], none.mean(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(vals["sum"], none.sum(), rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match="reduction"):
        losses.build(name, reduction="median")(pred, ab, L=L, rgb=rgb)


@pytest.mark.parametrize("name", ALL)
def test_loss_weight_scales_the_value(name, sample):
    if not _accepts(name, "loss_weight"):
        pytest.skip(f"{name} takes no loss_weight argument")
    rgb, L, ab = sample
    pred = _pred(name, ab).detach()
    one = losses.build(name)(pred, ab, L=L, rgb=rgb)
    three = losses.build(name, loss_weight=3.0)(pred, ab, L=L, rgb=rgb)
    torch.testing.assert_close(three, 3 * one, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ALL)
def test_deterministic(name, sample):
    rgb, L, ab = sample
    pred = _pred(name, ab).detach()
    a = losses.build(name)(pred, ab, L=L, rgb=rgb)
    b = losses.build(name)(pred, ab, L=L, rgb=rgb)
    torch.testing.assert_close(a, b)


# ----------------------------------------------------------------------------------------- the built-in pixel losses


def _np(x: torch.Tensor) -> np.ndarray:
    return x.detach().double().numpy()


def test_pixel_losses_match_numpy(sample):
    """MSE, L1 and Huber on ab / 110 against numpy formulas (float32 vs float64: rtol 1e-5)."""
    rgb, L, ab = sample
    pred = _pred("mse", ab).detach()
    d = (_np(pred) - _np(ab)) / 110.0
    delta = 0.1
    huber = np.where(np.abs(d) < delta, 0.5 * d**2, delta * (np.abs(d) - 0.5 * delta))
    expected = {"mse": (d**2).mean(), "l1": np.abs(d).mean(), "huber": huber.mean()}
    for name, want in expected.items():
        got = losses.build(name)(pred, ab, L=L, rgb=rgb).item()
        assert got == pytest.approx(want, rel=1e-5), name
    assert losses.build("huber", delta=1.0)(pred, ab).item() == pytest.approx(
        np.where(np.abs(d) < 1, 0.5 * d**2, np.abs(d) - 0.5).mean(), rel=1e-5)


@pytest.mark.parametrize("name", ["mse", "l1", "huber"])
def test_pixel_loss_is_zero_at_the_target_and_rejects_shape_mismatch(name, sample):
    _, _, ab = sample
    assert losses.build(name)(ab.clone(), ab).item() == 0.0
    with pytest.raises(ValueError, match="shape"):
        losses.build(name)(ab[:, :1], ab)


def test_composite_spec_is_a_weighted_sum(sample):
    rgb, L, ab = sample
    pred = _pred("mse", ab).detach()
    comp = losses.build("mse+0.5*l1")
    want = losses.build("mse")(pred, ab) + 0.5 * losses.build("l1")(pred, ab)
    torch.testing.assert_close(comp(pred, ab, L=L, rgb=rgb), want)
    assert comp.head == "ab"
    assert losses.parse_spec("2*mse + 1e-1*huber") == [(2.0, "mse"), (0.1, "huber")]


@pytest.mark.parametrize("spec, match", [("mse+kl", "heads"), ("nope", "available"), ("0*mse", "positive"),
                                         ("mse++l1", "cannot parse")])
def test_bad_specs_are_rejected(spec, match):
    with pytest.raises(ValueError, match=match):
        losses.build(spec)
