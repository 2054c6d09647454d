"""Issue 30, items 2 and 6: the memory a run needs before its first step does not grow with the training set (the
set is streamed once it exceeds ``--cache-mb``), and the paper preset starts from an ImageNet-sized file list.
Times to step 1 are measured by the same command (``python -m bench.scale``) and recorded in results/scale-cpu.md,
not asserted here."""
from __future__ import annotations

import math

import pytest
import torch
import torchvision

from bench import scale

pytestmark = pytest.mark.slow


def test_peak_memory_before_step_1_is_flat_from_300_to_20000_images(tmp_path):
    small = scale.measure(300, tmp_path, "quick", cache_mb=64, workers=None, links=False)
    large = scale.measure(20_000, tmp_path, "quick", cache_mb=64, workers=None, links=True)
    assert not small["streamed"] and large["streamed"] and large["images"] == 18_000
    assert large["peak_rss_mb"] - small["peak_rss_mb"] < 100, (small, large)
    assert large["worker_peak_rss_mb"] - small["worker_peak_rss_mb"] < 500, (small, large)  # a forked worker
    assert math.isfinite(small["loss"]) and math.isfinite(large["loss"])


def test_the_paper_preset_reaches_step_1_on_a_100k_file_list(tmp_path, monkeypatch):
    """The paper's data settings (256 px, ImageNet VGG-16 from the hub cache: here one made by torchvision's own
    layer code, random) on 100,000 listed files under the default --cache-mb. The batch is 2 instead of 16 so
    that one CPU step stays short: the data path is what is tested."""
    home = tmp_path / "torch_home"
    ckpt = home / "hub" / "checkpoints" / "vgg16-397923af.pth"
    ckpt.parent.mkdir(parents=True)
    feats = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["D"])
    torch.save({**{f"features.{k}": v for k, v in feats.state_dict().items()},
                "classifier.0.weight": torch.zeros(4, 4)}, ckpt)
    monkeypatch.setenv("TORCH_HOME", str(home))
    row = scale.measure(100_000, tmp_path, "paper", cache_mb=None, workers=None, links=True, batch_size=2)
    assert row["streamed"] and row["images"] == 90_000 and row["size"] == 256
    assert math.isfinite(row["loss"])
    assert row["peak_rss_mb"] < 8 * 1024, row  # a third of the 24 GiB machine, at batch 2
