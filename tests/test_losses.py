"""Every registered loss, parametrized over ``losses.available()``: a newly registered loss is tested for free.

Each loss gets ``loss(pred, target_ab, L=L, rgb=rgb)`` on tiny real crops (2×…×32×32, so that losses with a VGG
inside stay cheap): ab heads get ``B×2×H×W`` predictions, bins heads ``B×Q×H×W`` logits with ``Q = ABBins().n_bins``.
Losses built around a pretrained network get ``backbone="random"`` (tests run offline, without the ImageNet
checkpoint); losses with a critic are built with its fixed seed, so two builds are the same function; losses that
declare ``signed = True`` (an adversarial Wasserstein estimate) may be negative. The built-in pixel losses are also
checked against numpy formulas, in ab and in RGB space, and the RGB-space gradient against finite differences.
"""
from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch

from bench.data.abbins import ABBins
from bench.data.colour import split_lab
import losses

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


def _build(name: str, **params):
    """``losses.build`` with a random backbone for the losses that take one (no ImageNet checkpoint offline)."""
    if _accepts(name, "backbone"):
        params.setdefault("backbone", "random")
    return losses.build(name, **params)


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
    crit = _build(name)
    pred = _pred(name, ab)
    loss = crit(pred, ab, L=L, rgb=rgb)
    assert loss.ndim == 0
    assert torch.isfinite(loss)
    if not getattr(crit, "signed", False):
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
    vals = {r: _build(name, reduction=r)(pred, ab, L=L, rgb=rgb) for r in ("mean", "sum", "none")}
    none = vals["none"]
    assert none.ndim >= 1 and none.shape[0] == ab.shape[0]
    assert torch.isfinite(none).all()
    torch.testing.assert_close(vals["mean"], none.mean(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(vals["sum"], none.sum(), rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match="reduction"):
        _build(name, reduction="median")(pred, ab, L=L, rgb=rgb)


@pytest.mark.parametrize("name", ALL)
def test_loss_weight_scales_the_value(name, sample):
    if not _accepts(name, "loss_weight"):
        pytest.skip(f"{name} takes no loss_weight argument")
    rgb, L, ab = sample
    pred = _pred(name, ab).detach()
    one = _build(name)(pred, ab, L=L, rgb=rgb)
    three = _build(name, loss_weight=3.0)(pred, ab, L=L, rgb=rgb)
    torch.testing.assert_close(three, 3 * one, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ALL)
def test_deterministic(name, sample):
    rgb, L, ab = sample
    pred = _pred(name, ab).detach()
    a = _build(name)(pred, ab, L=L, rgb=rgb)
    b = _build(name)(pred, ab, L=L, rgb=rgb)
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize("name", ALL)
def test_backbone_is_explicit(name, torch_home):
    """A loss with a backbone defaults to ImageNet weights and, offline without them, fails naming the file and
    TORCH_HOME; it never falls back to a random network."""
    if not _accepts(name, "backbone"):
        pytest.skip(f"{name} has no backbone")
    with pytest.raises(Exception) as err:
        losses.build(name)
    assert "vgg16-397923af.pth" in str(err.value) and "TORCH_HOME" in str(err.value)
    with pytest.raises(ValueError, match="backbone"):
        losses.build(name, backbone="imagenet1k")


@pytest.mark.parametrize("name", ALL)
def test_critic_step_and_state_dict_roundtrip(name, sample):
    """A loss with a critic trains it in ``extra_step`` (the training step's hook) (the value moves), and its state_dict — critic weights,
    optimiser state, update count — restores a loss that continues identically."""
    crit = _build(name)
    if not hasattr(crit, "extra_step"):
        pytest.skip(f"{name} has no critic")
    rgb, L, ab = sample
    pred = _pred(name, ab).detach()
    before = crit(pred, ab, L=L, rgb=rgb)
    torch.manual_seed(0)
    crit.extra_step(pred, ab, L=L, rgb=rgb)
    after = crit(pred, ab, L=L, rgb=rgb)
    assert not torch.equal(before, after)
    state = crit.state_dict()
    twin = _build(name, critic_seed=99)
    twin.load_state_dict(state)
    torch.testing.assert_close(twin(pred, ab, L=L, rgb=rgb), after)
    for c in (crit, twin):
        torch.manual_seed(1)
        c.extra_step(pred, ab, L=L, rgb=rgb)
    torch.testing.assert_close(twin(pred, ab, L=L, rgb=rgb), crit(pred, ab, L=L, rgb=rgb))


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


@pytest.mark.parametrize("space", ["ab", "rgb"])
@pytest.mark.parametrize("name", ["mse", "l1", "huber"])
def test_pixel_loss_is_zero_at_the_target_and_rejects_shape_mismatch(name, space, sample):
    _, L, ab = sample
    assert losses.build(name, space=space)(ab.clone(), ab, L=L).item() == 0.0
    with pytest.raises(ValueError, match="shape"):
        losses.build(name, space=space)(ab[:, :1], ab, L=L)


def test_rgb_space_pixel_losses_match_numpy_on_skimage_rgb(sample):
    """``space="rgb"``: the losses on sRGB rebuilt from (true L, ab) by skimage's lab2rgb (unclipped), float64."""
    from skimage.color import lab2rgb

    rgb, L, ab = sample
    pred = _pred("mse", ab).detach()

    def sk_rgb(ab_):
        lab = torch.cat([L, ab_], 1).double().permute(0, 2, 3, 1).numpy()
        # skimage clips to [0, 1] after the conversion; undo that by extending the sRGB curve to negative values
        # is not possible, so compare only where both images are in gamut and check the clipped pixels separately
        return np.stack([lab2rgb(x) for x in lab])

    p, t = sk_rgb(pred), sk_rgb(ab)
    inside = ((p > 0) & (p < 1) & (t > 0) & (t < 1)).all(axis=-1)
    assert inside.mean() > 0.3  # enough in-gamut pixels to be a real check
    d = (p - t)[inside]
    for name, want in {"mse": (d**2).mean(), "l1": np.abs(d).mean()}.items():
        per_px = losses.build(name, space="rgb", reduction="none")(pred.double(), ab.double(), L=L.double())
        got = per_px.permute(0, 2, 3, 1).numpy()[inside].mean()
        assert got == pytest.approx(want, rel=1e-4, abs=1e-7), name
    with pytest.raises(ValueError, match="space"):
        losses.build("mse", space="xyz")
    with pytest.raises(ValueError, match="lightness"):
        losses.build("mse", space="rgb")(pred, ab)


@pytest.mark.parametrize("name", ["mse", "l1", "huber"])
def test_rgb_space_gradient_matches_finite_differences(name, sample):
    """The gradient through the differentiable Lab → RGB, checked by central finite differences in float64
    (torch.autograd.gradcheck) on real pixels, including out-of-gamut predictions (no clamp in the path)."""
    _, L, ab = sample
    L64 = L[:1, :, :6, :6].double()
    ab64 = ab[:1, :, :6, :6].double()
    g = torch.Generator().manual_seed(3)
    pred = (ab64 + 60 * torch.randn(ab64.shape, generator=g, dtype=torch.float64)).requires_grad_(True)
    crit = losses.build(name, space="rgb")
    assert torch.autograd.gradcheck(lambda p: crit(p, ab64, L=L64), (pred,), eps=1e-6, atol=1e-7, rtol=1e-4)
    # out-of-gamut pixels were in the check: the unclipped RGB leaves [0, 1] somewhere
    from bench.data.colour import lab_to_rgb

    out = lab_to_rgb(torch.cat([L64, pred.detach()], 1), clamp=False)
    assert (out < 0).any() or (out > 1).any()


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
