"""Every registered model, parametrized over ``models.available()`` (a newly registered one is tested for free), and
the loading of pretrained encoder weights (``models.vgg``), offline, from fake checkpoints.

Colorizers are built at ``width=0.25`` with ``encoder_weights="none"`` and run on ``2×1×32×32`` lightness from real
photos (plus a colour reference when ``model.needs_reference``). Models whose ``task`` is not ``"colorization"``
(style transfer, e.g. AdaIN) only get a generic build-and-forward check on RGB inputs (in ``test_ab_head``).
"""
from __future__ import annotations

import inspect
import os

import pytest
import torch
import torchvision

from bench.data.abbins import ABBins
from bench.data.colour import split_lab
import models
from models.vgg import EncoderWeightsError, imagenet_checkpoint_path

ALL = models.available()
N_BINS = ABBins().n_bins


@pytest.fixture(scope="module")
def inputs(real_batch):
    """(L ``2×1×32×32``, reference RGB ``2×3×32×32`` in [0, 1]) from real photos."""
    rgb = real_batch[:2, :, 16:48, 16:48].float() / 255.0
    L, _ = split_lab(rgb)
    ref = real_batch[2:4, :, 16:48, 16:48].float() / 255.0
    return L, ref


def _build(name: str, **params):
    torch.manual_seed(0)
    return models.build(name, width=0.25, encoder_weights="none", **params)


def _task(model) -> str:
    return getattr(model, "task", "colorization")


def _supports(name: str, param: str) -> bool:
    sig = inspect.signature(models.get_factory(name)).parameters
    return param in sig or any(p.kind == p.VAR_KEYWORD for p in sig.values())


def _forward(model, L, ref):
    return model(L, ref) if getattr(model, "needs_reference", False) else model(L)


def _check_grads(model, out):
    # a target away from 0: heads start at zero output, where out² would have a zero gradient everywhere
    (out.float() - 1.0).square().mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None for g in grads), "some trainable parameter got no gradient"
    assert all(torch.isfinite(g).all() for g in grads)
    assert sum(g.abs().sum() for g in grads) > 0


def test_registry_lists_the_builtin_models():
    assert {"unet_vgg16", "unet_vgg19"} <= set(ALL)
    with pytest.raises(ValueError, match="available: .*unet_vgg16"):
        models.get_factory("nope")


@pytest.mark.parametrize("name", ALL)
def test_ab_head(name, inputs):
    """Colorizers: ``B×2×H×W`` ab out, finite, with finite gradients everywhere. Other tasks: the generic check."""
    L, ref = inputs
    model = _build(name, head="ab") if _supports(name, "head") else _build(name)
    if _task(model) != "colorization":
        _check_generic_forward(name, model, ref)
        return
    model.train()
    out = _forward(model, L, ref)
    assert out.shape == (2, 2, 32, 32)
    assert torch.isfinite(out).all()
    ab = model.to_ab(out)
    assert ab.shape == (2, 2, 32, 32)
    assert torch.isfinite(ab).all()
    _check_grads(model, out)


def _check_generic_forward(name, model, rgb):
    """E.g. style-transfer models: every required positional input of ``forward`` gets an RGB batch; the output
    must be a finite tensor with the batch first."""
    sig = inspect.signature(model.forward).parameters.values()
    required = [p for p in sig if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if not 1 <= len(required) <= 2:
        pytest.skip(f"{name} is a {_task(model)} model whose forward takes {len(required)} inputs: no generic call")
    model.eval()
    with torch.no_grad():
        out = model(*[rgb, rgb.flip(0)][: len(required)])
    assert isinstance(out, torch.Tensor) and out.shape[0] == 2
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", ALL)
def test_bins_head(name, inputs):
    if not _supports(name, "head"):
        pytest.skip(f"{name} has no head argument")
    L, ref = inputs
    model = _build(name, head="bins")
    if _task(model) != "colorization":
        pytest.skip(f"{name} is a {_task(model)} model")
    out = _forward(model, L, ref)
    assert out.shape == (2, N_BINS, 32, 32)
    ab = model.to_ab(out)
    assert ab.shape == (2, 2, 32, 32)
    assert torch.isfinite(ab).all()
    # the annealed mean is a convex combination of bin centres: it stays inside their bounding box
    c = ABBins().centres
    assert (ab[:, 0] >= c[:, 0].min() - 1e-3).all() and (ab[:, 0] <= c[:, 0].max() + 1e-3).all()
    assert (ab[:, 1] >= c[:, 1].min() - 1e-3).all() and (ab[:, 1] <= c[:, 1].max() + 1e-3).all()
    _check_grads(model, model.to_ab(_forward(model, L, ref)))


@pytest.mark.parametrize("head", ["ab", "bins"])
@pytest.mark.parametrize("name", ALL)
def test_every_head_starts_at_grey(name, head, inputs):
    """An untrained colorizer predicts ab = 0 (the greyscale baseline) on real photos, whatever its head: the bins
    head's annealed mean included (equal logits would decode to the mean bin centre, ab ≈ (15.6, 6.0))."""
    if not _supports(name, "head"):
        pytest.skip(f"{name} has no head argument")
    L, ref = inputs
    model = _build(name, head=head)
    if _task(model) != "colorization":
        pytest.skip(f"{name} is a {_task(model)} model")
    for mode in (model.train, model.eval):
        mode()
        with torch.no_grad():
            ab = model.to_ab(_forward(model, L, ref))
        assert ab.abs().max() < 0.01, f"{name}/{head} starts at ab up to {ab.abs().max():.3f}, not grey"
    equal = ABBins().decode(torch.zeros(1, N_BINS, 1, 1)).flatten()
    assert equal.abs().max() > 5  # the reference that the test would catch: equal logits are far from grey


@pytest.mark.parametrize("name", ALL)
def test_eval_mode_is_deterministic_and_records_no_pretraining(name, inputs):
    L, ref = inputs
    model = _build(name)
    assert getattr(model, "encoder_pretrained", getattr(model, "pretrained", False)) is False
    if _task(model) != "colorization":
        pytest.skip(f"{name} is a {_task(model)} model")
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(_forward(model, L, ref), _forward(model, L, ref))


# ---------------------------------------------------------------------------------------------- encoder weights


@pytest.fixture(scope="module")
def fake_vgg16_state():
    """A torchvision VGG-16 state dict with random features (``features.*``, built by torchvision's own layer code)
    and a tiny stand-in classifier: the key layout of the real checkpoint without its 500 MB."""
    torch.manual_seed(123)
    feats = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["D"])
    state = {f"features.{k}": v.clone() for k, v in feats.state_dict().items()}
    state["classifier.0.weight"] = torch.zeros(4, 4)
    return state


def _assert_encoder_equals(model, state):
    own = model.features.state_dict()
    assert set(own) == {k[len("features."):] for k in state if k.startswith("features.")}
    for k, v in own.items():
        assert torch.equal(v, state[f"features.{k}"]), k


def test_imagenet_weights_load_from_the_torch_hub_cache(torch_home, fake_vgg16_state):
    url = torchvision.models.VGG16_Weights.IMAGENET1K_V1.url
    ckpt = torch_home / "hub" / "checkpoints" / os.path.basename(url)
    ckpt.parent.mkdir(parents=True)
    torch.save(fake_vgg16_state, ckpt)
    assert imagenet_checkpoint_path("vgg16") == ckpt
    model = models.build("unet_vgg16", head="ab", width=1.0, encoder_weights="imagenet")
    assert model.encoder_pretrained is True
    _assert_encoder_equals(model, fake_vgg16_state)


def test_encoder_weights_from_a_path(tmp_path, fake_vgg16_state):
    path = tmp_path / "my_vgg16.pth"
    torch.save(fake_vgg16_state, path)
    model = models.build("unet_vgg16", head="ab", width=1.0, encoder_weights=str(path))
    assert model.encoder_pretrained is True
    _assert_encoder_equals(model, fake_vgg16_state)
    # a features-only state dict (no "features." prefix) loads too
    bare = tmp_path / "features_only.pth"
    torch.save({k[len("features."):]: v for k, v in fake_vgg16_state.items() if k.startswith("features.")}, bare)
    _assert_encoder_equals(models.build("unet_vgg16", width=1.0, encoder_weights=str(bare)), fake_vgg16_state)


def test_missing_imagenet_weights_offline_name_the_file_and_torch_home(torch_home):
    expected = torch_home / "hub" / "checkpoints" / os.path.basename(torchvision.models.VGG16_Weights.IMAGENET1K_V1.url)
    with pytest.raises(EncoderWeightsError) as err:
        models.build("unet_vgg16", head="ab", width=1.0, encoder_weights="imagenet")
    msg = str(err.value)
    assert str(expected) in msg
    assert f"TORCH_HOME={torch_home}" in msg
    assert not expected.exists()


def test_missing_or_unfit_weight_files_are_errors(tmp_path):
    with pytest.raises(EncoderWeightsError, match="does not exist"):
        models.build("unet_vgg16", width=1.0, encoder_weights=str(tmp_path / "nope.pth"))
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(EncoderWeightsError, match="cannot read"):
        models.build("unet_vgg16", width=1.0, encoder_weights=str(junk))
    partial = tmp_path / "partial.pth"
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3)}, partial)
    with pytest.raises(EncoderWeightsError, match="lack"):
        models.build("unet_vgg16", width=1.0, encoder_weights=str(partial))


@pytest.mark.parametrize("weights", ["imagenet", "some/file.pth"])
def test_pretrained_weights_need_full_width(weights):
    with pytest.raises(EncoderWeightsError, match="width=1.0"):
        models.build("unet_vgg16", head="ab", width=0.25, encoder_weights=weights)


@pytest.mark.parametrize("name", ALL)
def test_a_random_encoder_is_initialised_as_torchvision_initialises_vgg(name):
    """A random VGG encoder gets torchvision's VGG init (Kaiming normal, fan-out: weight SD √(2 / (9·c_out)), zero
    bias), not PyTorch's default conv init (SD 1/√(27·c_in)), which left the deepest blocks' features 10–30× smaller
    than the first's, so that they contributed almost nothing to a random U-Net (results/study-preset-cpu.md)."""
    model = _build(name)
    stacks = [m for attr in ("features", "ref_features") if isinstance(m := getattr(model, attr, None), torch.nn.Module)]
    if not stacks:
        pytest.skip(f"{name} has no VGG encoder")
    for stack in stacks:
        convs = [m for m in stack.modules() if isinstance(m, torch.nn.Conv2d)]
        assert convs
        for conv in convs:
            expected = (2.0 / (conv.out_channels * 9)) ** 0.5
            assert conv.weight.std().item() == pytest.approx(expected, rel=0.2), conv
            assert not conv.bias.any()


def test_an_untrained_global_branch_changes_nothing():
    """The global branch starts at zero: the untrained unet_vgg16_global is the plain U-Net with the same weights
    (the same init seed gives the same encoder, decoder and head), for both heads."""
    from bench.data.colour import AB_SCALE
    import models

    L = torch.rand(2, 1, 32, 32) * 100
    for head in ("ab", "bins"):
        torch.manual_seed(0)
        plain = models.build("unet_vgg16", head=head, width=0.125).eval()
        torch.manual_seed(0)
        glob = models.build("unet_vgg16_global", head=head, width=0.125).eval()
        glob.load_state_dict({**glob.state_dict(), **plain.state_dict()})
        with torch.no_grad():
            assert torch.allclose(plain(L), glob(L), atol=1e-5)
            glob.global_branch.bias.bias.fill_(0.5)  # a trained bias moves every pixel of the image by the same
            d = glob(L) - plain(L)
        want = 0.5 * AB_SCALE if head == "ab" else 0.5  # the ab head's output is in Lab units
        assert torch.allclose(d, torch.full_like(d, want), atol=1e-3)
