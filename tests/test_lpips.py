"""LPIPS-VGG (``models.lpips``: the ``lpips`` loss and metric) against torchmetrics' reference implementation, and the
``perceptual`` loss against a torchvision VGG-16, with the same backbone weights, on real photos."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
import torchvision
from torchmetrics.functional.image.lpips import _LPIPS

import losses
from bench.colour import lab_to_rgb, split_lab
from bench.metrics import evaluate_grey, lpips_metric
from models.lpips import LPIPS, lin_weights_path
from models.vgg import IMAGENET_MEAN, IMAGENET_STD, EncoderWeightsError, VGG16Taps


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
    torch.manual_seed(7)
    return _LPIPS(pretrained=True, net="vgg", pnet_rand=True, use_dropout=True).eval()


def _copy_backbone(ref: _LPIPS, vgg: VGG16Taps) -> None:
    """Load the reference's VGG-16 slices into our stack (both use torchvision's layer indices)."""
    state = {}
    for k in range(1, 6):
        for name, t in getattr(ref.net, f"slice{k}").state_dict().items():
            state[name] = t
    vgg.features.load_state_dict(state, strict=True)


def test_lin_weights_come_from_torchmetrics():
    assert lin_weights_path().is_file()
    net = LPIPS("random")
    ref = torch.load(lin_weights_path(), map_location="cpu", weights_only=True)
    for k, lin in enumerate(net.lins):
        torch.testing.assert_close(lin.weight, ref[f"lin{k}.model.1.weight"])


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
    import bench.metrics as metrics

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
