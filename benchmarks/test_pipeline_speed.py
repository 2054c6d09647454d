"""CPU data pipeline: the naive per-image loop (baseline) against ours, side by side (pytest-benchmark).

    pytest benchmarks/test_pipeline_speed.py --benchmark-only

The issue's target is ours ≥ 4× the naive loop at 256² on this 2-core machine; compare the two rows' means.
"""
import os
from pathlib import Path

import pytest

from bench.data.pipeline import fast_epoch, naive_epoch
from bench.data.sources import ImageStore, list_images

DATA = Path(os.environ.get("BENCH_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
N, SIZE, CROP = 64, 256, 256


@pytest.fixture(scope="module")
def files():
    return list_images(DATA / "imagenet-sample-256")[:N]


def test_naive_per_image_loop(benchmark, files):
    benchmark.extra_info["images"] = N
    benchmark.pedantic(lambda: [x for x in naive_epoch(files, SIZE, CROP)], rounds=3, warmup_rounds=1)


def test_ours_first_epoch_decode_included(benchmark, files):
    benchmark.extra_info["images"] = N
    benchmark.pedantic(lambda: [x for x in fast_epoch(ImageStore(files, SIZE), CROP)], rounds=3, warmup_rounds=1)


def test_ours_cached_epoch(benchmark, files):
    store = ImageStore(files, SIZE)
    benchmark.extra_info["images"] = N
    benchmark.pedantic(lambda: [x for x in fast_epoch(store, CROP, epoch=1)], rounds=3, warmup_rounds=1)
