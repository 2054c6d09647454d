"""The batched training-data pipeline produces exactly what the naive per-image reference loop produces."""
import numpy as np
import pytest
import torch

from bench.data.pipeline import compare, fast_epoch, naive_epoch
from bench.data.sources import ImageStore, list_images


@pytest.fixture(scope="module")
def files(data_root):
    return list_images(data_root / "imagenet-sample-256")[:32] + list_images(data_root / "kodak24")[:8]


@pytest.mark.parametrize("size,crop", [(64, 48), (96, 96)])
def test_fast_pipeline_equals_naive_loop(files, size, crop):
    """Same crops byte for byte; Lab (float32 table path vs skimage float64) within 1e-3 Lab units."""
    naive = list(naive_epoch(files, size, crop, crop_seed=7, epoch=0))
    store = ImageStore(files, size)
    fast_u8, fast_lab = zip(*fast_epoch(store, crop, crop_seed=7, epoch=0, batch_size=8))
    fast_u8, fast_lab = torch.cat(fast_u8), torch.cat(fast_lab)
    assert len(fast_u8) == len(naive) == len(files)
    for j, (patch, lab) in enumerate(naive):
        assert np.array_equal(fast_u8[j].permute(1, 2, 0).numpy(), patch), f"crop {j} differs"
        np.testing.assert_allclose(fast_lab[j].permute(1, 2, 0).numpy(), lab, atol=1e-3)


def test_epochs_differ_but_are_reproducible(files):
    store = ImageStore(files[:16], 64)
    e0 = torch.cat([u8 for u8, _ in fast_epoch(store, 48, 3, 0, 8)])
    e1 = torch.cat([u8 for u8, _ in fast_epoch(store, 48, 3, 1, 8)])
    again = torch.cat([u8 for u8, _ in fast_epoch(store, 48, 3, 0, 8)])
    assert torch.equal(e0, again)
    assert not torch.equal(e0, e1)


def test_compare_reports_positive_rates(files):
    r = compare(files, size=64, crop=64, n_images=16, batch_size=8)
    assert r["images"] == 16
    for key in ("naive_img_per_s", "fast_img_per_s", "fast_cached_img_per_s", "speedup", "speedup_cached"):
        assert np.isfinite(r[key]) and r[key] > 0
