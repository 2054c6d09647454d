"""The CPU training-data pipeline, measured against the naive per-image loop it replaces.

Naive reference (what most colorization code does, one image at a time in a loader worker): PIL decode → resize
(shorter side → size) → fixed-seed crop → ``skimage.color.rgb2lab`` in float64 → tensor.

Our pipeline (``bench.data.sources`` + ``bench.data.colour``): every file decoded and resized once, by a thread pool,
into uint8 tensors kept in RAM; each batch is cut from them with the same fixed-seed offsets and converted to Lab in one
batched float32 torch call (on the training device; here the CPU).

Both produce the same crops byte for byte and the same Lab values to float32 precision (tests/test_pipeline.py).

Measured by ``python -m bench.throughput --pipeline --data imagenet-sample --data-root ../shared/data --n-images 256
--size 256`` (one row ``mode=pipeline`` in its CSV) and by benchmarks/test_pipeline_speed.py. ``bench.throughput``
imports this module with its command line, so torch and the data modules are imported inside the functions.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

    from bench.data.sources import ImageStore


def naive_sample(path: Path, i: int, epoch: int, size: int, crop: int, crop_seed: int) -> tuple[np.ndarray, np.ndarray]:
    """One training sample the naive way: (uint8 ``crop×crop×3`` crop, float64 Lab ``crop×crop×3``)."""
    from skimage.color import rgb2lab

    from bench.data.sources import crop_offset, load_image, resize_shorter

    img = resize_shorter(load_image(path), size)
    top, left, _ = crop_offset(img.shape[0], img.shape[1], crop, crop_seed, epoch, i)
    patch = img[top : top + crop, left : left + crop]
    return patch, rgb2lab(patch)


def naive_epoch(files: list[Path], size: int, crop: int, crop_seed: int = 0, epoch: int = 0):
    """A whole epoch, image by image, in the fixed-seed order: yields (uint8 crop, Lab) per sample."""
    from bench.data.sources import epoch_order

    for i in epoch_order(len(files), crop_seed, epoch):
        yield naive_sample(files[i], int(i), epoch, size, crop, crop_seed)


def fast_epoch(store: ImageStore, crop: int, crop_seed: int = 0, epoch: int = 0, batch_size: int = 16):
    """A whole epoch from decoded images: yields (uint8 ``B×3×c×c`` batch, float32 Lab ``B×3×c×c``)."""
    from bench.data.colour import rgb_to_lab
    from bench.data.sources import CropSchedule

    schedule = CropSchedule(store, crop, crop_seed)
    n = len(store)
    first = epoch * n // batch_size  # batches of the stream that fall in this epoch (whole batches only)
    for k in range(first, (epoch + 1) * n // batch_size):
        u8 = schedule.batch(k, batch_size)
        yield u8, rgb_to_lab(u8)  # the exact uint8 table path, as in training


def compare(files: list[Path], size: int = 256, crop: int = 256, n_images: int = 128, batch_size: int = 16,
            crop_seed: int = 0) -> dict:
    """Time the naive loop and our pipeline side by side on the same files (one epoch each).

    Args:
        files: image files (the first ``n_images`` are used).
        size: shorter side after resizing.
        crop: crop side.
        n_images: how many images.
        batch_size: batch size of our pipeline.
        crop_seed: the fixed crop seed.

    Returns:
        dict with ``naive_img_per_s``; ``fast_img_per_s`` (cold: decoding included, what the first epoch costs);
        ``fast_cached_img_per_s`` (later epochs, images already decoded); ``speedup`` (cold) and
        ``speedup_cached``; the settings; and ``threads`` used by torch.
    """
    import torch

    from bench.data.sources import ImageStore

    files = list(files)[:n_images]
    n = len(files) - len(files) % batch_size
    files = files[:n]
    if n == 0:
        raise ValueError(f"need at least {batch_size} images, got {len(files)}")

    t0 = time.perf_counter()
    for _ in naive_epoch(files, size, crop, crop_seed):
        pass
    naive = time.perf_counter() - t0

    t0 = time.perf_counter()
    store = ImageStore(files, size)
    for _ in fast_epoch(store, crop, crop_seed, 0, batch_size):
        pass
    cold = time.perf_counter() - t0

    t0 = time.perf_counter()
    for _ in fast_epoch(store, crop, crop_seed, 1, batch_size):
        pass
    cached = time.perf_counter() - t0
    return {
        "images": n, "size": size, "crop": crop, "batch_size": batch_size, "threads": torch.get_num_threads(),
        "naive_img_per_s": n / naive, "fast_img_per_s": n / cold, "fast_cached_img_per_s": n / cached,
        "speedup": naive / cold, "speedup_cached": naive / cached,
    }
