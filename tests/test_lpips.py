"""LPIPS-VGG (``models.lpips``: the ``lpips`` loss and metric) against torchmetrics' reference implementation, and the
``perceptual`` loss against a torchvision VGG-16, with the same backbone weights, on real photos; the LPIPS linear
weights that colorbench ships (hash, licence, package data, the same values as torchmetrics' copy)."""
from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from bench.config.models_check import check_lpips_weights
from bench.data.colour import lab_to_rgb, split_lab
from bench.metrics.compute import evaluate_grey, lpips_metric
import losses
import models.lpips as mlpips
from models.lpips import LPIPS, lin_weights_path, read_lin_weights
from models.vgg import IMAGENET_MEAN, IMAGENET_STD, EncoderWeightsError, VGG16Taps

try:  # torchmetrics' private reference network: the tests compare with it while torchmetrics has it
    from torchmetrics.functional.image.lpips import _LPIPS
except ImportError:
    _LPIPS = None

ROOT = Path(__file__).resolve().parent.parent
#: The shipped file's SHA-256 (the LPIPS project's vgg.pth v0.1, byte for byte torchmetrics 1.9.0's copy).
VGG_SHA256 = "a78928a0af1e5f0fcb1f3b9e8f8c3a2a5a3de244d830ad5c1feddc79b8432868"
#: Recorded with torchmetrics 1.9.0's lpips_models/vgg.pth (the same bytes): the sum of each linear layer's weights
LIN_SUMS = (6.925991700962186, 8.858334008604288, 17.5150060467422, 51.521323032677174, 47.03485375829041)
#: ... and LPIPS.distance of the fixed features of ``_fixed_features`` (no random numbers involved)
FIXED_DISTANCE = (71.83824920654297, 5.734005451202393)


@pytest.fixture(scope="module")
def crops(real_batch):
    """Four real 48×48 crops (rgb in [0, 1], L, ab) and a prediction: the true ab shifted and noised."""
    rgb = real_batch[:4, :, 8:56, 8:56].float() / 255.0
    L, ab = split_lab(rgb)
    g = torch.Generator().manual_seed(0)
    pred = ab * 0.5 + 15 * torch.randn(ab.shape, generator=g) + 10
    return rgb, L, ab, pred


@pytest.fixture(scope="module")
def reference():
    """torchmetrics' LPIPS-VGG with its shipped linear weights and a random torchvision VGG-16 (seeded)."""
    if _LPIPS is None:
        pytest.skip("torchmetrics no longer has its private _LPIPS reference network")
    torch.manual_seed(7)
    return _LPIPS(pretrained=True, net="vgg", pnet_rand=True, use_dropout=True).eval()


def _copy_backbone(ref: _LPIPS, vgg: VGG16Taps) -> None:
    """Load the reference's VGG-16 slices into our stack (both use torchvision's layer indices)."""
    state = {}
    for k in range(1, 6):
        for name, t in getattr(ref.net, f"slice{k}").state_dict().items():
            state[name] = t
    vgg.features.load_state_dict(state, strict=True)


def torchmetrics_copy() -> Path | None:
    """torchmetrics' copy of the weights (where the LPIPS network read them before), if it still ships one."""
    spec = importlib.util.find_spec("torchmetrics")
    path = Path(spec.origin).parent / "functional" / "image" / "lpips_models" / "vgg.pth" if spec else None
    return path if path is not None and path.is_file() else None


def _fixed_features(net: LPIPS) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    chans = [lin.weight.shape[1] for lin in net.lins]
    grid = [torch.linspace(0, 1, 2 * c * 16).reshape(2, c, 4, 4) for c in chans]
    return [g.sin() for g in grid], [g.cos() for g in grid]


def test_lin_weights_ship_with_colorbench_with_hash_and_licence():
    path = lin_weights_path()
    assert path == ROOT / "models" / "assets" / "lpips" / "vgg.pth" and path.stat().st_size == 7289
    assert hashlib.sha256(path.read_bytes()).hexdigest() == VGG_SHA256
    assert (path.parent / "SHA256SUMS").read_text().split() == [VGG_SHA256, "vgg.pth"]
    licence = (path.parent / "LICENSE").read_text()
    assert "Copyright (c) 2018, Richard Zhang, Phillip Isola, Alexei A. Efros, Eli Shechtman, Oliver Wang" in licence
    assert "Redistribution and use in source and binary forms" in licence
    net = LPIPS("random")
    for k, lin in enumerate(net.lins):
        assert float(lin.weight.double().sum()) == pytest.approx(LIN_SUMS[k], rel=1e-12)
    torch.testing.assert_close(net.distance(*_fixed_features(net)), torch.tensor(FIXED_DISTANCE), rtol=1e-6, atol=0)


def test_lin_weights_are_in_the_package_data():
    """An installed wheel has the file, its hash and licence (package-data of ``models``)."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["models"]
    shipped = {p.relative_to(ROOT / "models").as_posix() for p in (ROOT / "models" / "assets" / "lpips").iterdir()}
    assert {"assets/lpips/vgg.pth", "assets/lpips/SHA256SUMS", "assets/lpips/LICENSE"} <= shipped
    assert all(any(Path(f).match(g) for g in globs) for f in shipped), (shipped, globs)


def test_no_other_packages_lpips_files_are_read():
    for folder in ("bench", "models", "losses"):
        for src in (ROOT / folder).rglob("*.py"):
            text = src.read_text()
            assert not re.search(r"torchmetrics\.functional\.image\.lpips|lpips_models", text), src


def test_lpips_values_unchanged_from_torchmetrics_copy(crops):
    """The same LPIPS values as with the weights read from torchmetrics' folder (before colorbench shipped them):
    the files are byte for byte the same."""
    old = torchmetrics_copy()
    if old is None:
        pytest.skip("torchmetrics no longer ships lpips_models/vgg.pth: LIN_SUMS and FIXED_DISTANCE were recorded "
                    "from it")
    assert old.read_bytes() == lin_weights_path().read_bytes()
    rgb, L, _, _ = crops
    grey = lab_to_rgb(torch.cat([L, torch.zeros(len(L), 2, *L.shape[2:])], 1))
    net = LPIPS("random")
    new_values = net(grey, rgb)
    state = torch.load(old, map_location="cpu", weights_only=True)
    for k, lin in enumerate(net.lins):
        lin.weight.data.copy_(state[f"lin{k}.model.1.weight"])
    assert torch.equal(net(grey, rgb), new_values) and (new_values > 1e-3).all()


def _damaged_copy(tmp_path: Path, how: str) -> Path:
    folder = tmp_path / "lpips"
    shutil.copytree(lin_weights_path().parent, folder)
    path = folder / "vgg.pth"
    if how == "changed":
        data = bytearray(path.read_bytes())
        data[-100] ^= 0xFF
        path.write_bytes(bytes(data))
    elif how == "missing":
        path.unlink()
    elif how == "no manifest":
        (folder / "SHA256SUMS").unlink()
    return path


@pytest.mark.parametrize("how", ["changed", "missing", "no manifest"])
def test_damaged_lin_weights_are_one_line_naming_the_file(tmp_path, monkeypatch, how):
    path = _damaged_copy(tmp_path, how)
    monkeypatch.setattr(mlpips, "LIN_WEIGHTS", path)
    import bench.metrics.compute as metrics

    for call in (lambda: LPIPS("random"), read_lin_weights, lambda: lpips_metric("random", "cpu")):
        metrics._LPIPS.clear()
        with pytest.raises(EncoderWeightsError) as err:
            call()
        msg = str(err.value)
        assert str(path.parent) in msg and "reinstall colorbench" in msg and "\n" not in msg
        assert "weights_only" not in msg
    with pytest.raises(ValueError, match="reinstall colorbench"):
        check_lpips_weights()


def test_lpips_loss_equals_torchmetrics(crops, reference):
    """The loss of a prediction = torchmetrics' LPIPS of RGB(true L, predicted ab) (clipped) against the true RGB,
    per image and as a batch mean, with the same VGG-16 weights."""
    rgb, L, ab, pred = crops
    crit = losses.build("lpips", backbone="random", reduction="none")
    _copy_backbone(reference, crit.net.vgg)
    out = lab_to_rgb(torch.cat([L, pred], 1), clamp=True)
    want = reference(out, rgb, normalize=True).flatten()
    got = crit(pred, ab, L=L, rgb=rgb).flatten()
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
    assert (want > 1e-3).all()  # a real, non-trivial distance
    mean = losses.build("lpips", backbone="random")
    _copy_backbone(reference, mean.net.vgg)
    torch.testing.assert_close(mean(pred, ab, L=L, rgb=rgb), want.mean(), rtol=1e-4, atol=1e-6)


def test_lpips_metric_equals_torchmetrics_and_is_zero_for_identical_images(crops, reference):
    rgb, L, _, _ = crops
    net = LPIPS("random")
    _copy_backbone(reference, net.vgg)
    grey = lab_to_rgb(torch.cat([L, torch.zeros(len(L), 2, *L.shape[2:])], 1))
    torch.testing.assert_close(net(grey, rgb), reference(grey, rgb, normalize=True).flatten(), rtol=1e-4, atol=1e-6)
    assert net(rgb, rgb).abs().max() < 1e-6


def test_lpips_with_imagenet_backbone_loads_the_checkpoint(torch_home, crops, reference):
    """``backbone="imagenet"`` reads torchvision's file from $TORCH_HOME/hub/checkpoints (here a fake one holding the
    reference's random VGG-16) and then agrees with torchmetrics."""
    url = torchvision.models.VGG16_Weights.IMAGENET1K_V1.url
    ckpt = torch_home / "hub" / "checkpoints" / os.path.basename(url)
    ckpt.parent.mkdir(parents=True)
    tmp = VGG16Taps(backbone="random")
    _copy_backbone(reference, tmp)
    torch.save({f"features.{k}": v for k, v in tmp.features.state_dict().items()}, ckpt)
    rgb, L, ab, pred = crops
    crit = losses.build("lpips", backbone="imagenet", reduction="none")
    assert crit.net.vgg.pretrained
    out = lab_to_rgb(torch.cat([L, pred], 1), clamp=True)
    torch.testing.assert_close(crit(pred, ab, L=L, rgb=rgb).flatten(), reference(out, rgb, normalize=True).flatten(),
                               rtol=1e-4, atol=1e-6)


def test_lpips_metric_status(torch_home, real_batch):
    """Offline without the checkpoint the metric is 'missing' (no network, so NaN in the records, never a random
    stand-in); 'random' is used only when asked for, and scores the greyscale baseline."""
    import bench.metrics.compute as metrics

    metrics._LPIPS.clear()
    try:
        assert lpips_metric("imagenet", "cpu") == (None, "missing")
        net, status = lpips_metric("random", "cpu")
        assert status == "random" and isinstance(net, LPIPS)
        grey = evaluate_grey(real_batch[:3, :, :32, :32], "cpu", nets={"lpips": (net, status)})
        assert len(grey.per_image["lpips"]) == 3 and all(v > 0 for v in grey.per_image["lpips"])
        assert grey.row()["lpips_backbone"] == "random"
        assert "lpips" not in evaluate_grey(real_batch[:3, :, :32, :32], "cpu").per_image
        missing = evaluate_grey(real_batch[:3, :, :32, :32], "cpu", nets={"lpips": (None, "missing")}).row()
        assert np.isnan(missing["lpips"]) and missing["lpips_backbone"] == "missing"
    finally:
        metrics._LPIPS.clear()
    with pytest.raises(EncoderWeightsError, match="TORCH_HOME"):
        LPIPS("imagenet")


def test_perceptual_loss_matches_torchvision_vgg16(crops):
    """``perceptual`` = Σ over relu2_2 and relu3_3 of the MSE of torchvision VGG-16 features (same weights) of the
    ImageNet-normalised clipped RGB(true L, predicted ab) and the true RGB."""
    rgb, L, ab, pred = crops
    crit = losses.build("perceptual", backbone="random", reduction="none")
    tv = torchvision.models.vgg16(weights=None).features.eval()
    tv.load_state_dict(crit.vgg.features.state_dict(), strict=False)
    norm = lambda x: (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)  # noqa: E731
    out = lab_to_rgb(torch.cat([L, pred], 1), clamp=True)
    with torch.no_grad():
        want = sum((tv[: i + 1](norm(out)) - tv[: i + 1](norm(rgb))).pow(2).flatten(1).mean(1) for i in (8, 15))
    torch.testing.assert_close(crit(pred, ab, L=L, rgb=rgb).flatten(), want, rtol=1e-4, atol=1e-6)
    assert losses.build("perceptual", backbone="random")(ab, ab, L=L).item() < 1e-6
