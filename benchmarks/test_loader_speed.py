"""The streaming loader (bench.data.loader): 256 px crops decoded from JPEG by DataLoader workers, per worker count,
beside the RAM cache's cut of the same batches (pytest-benchmark).

    pytest benchmarks/test_loader_speed.py --benchmark-only

Divide the images per round (extra_info) by the mean time for images/s; ``python -m bench.throughput --loader``
gives the same figure with the number of workers a training step needs.
"""
import os
from pathlib import Path

import pytest

from bench.data.loader import FileStore, batches
from bench.data.sources import CropSchedule, ImageStore, list_images

DATA = Path(os.environ.get("BENCH_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
N, SIZE, CROP, BATCH, STEPS = 128, 256, 256, 16, 8


@pytest.fixture(scope="module")
def files():
    return list_images(DATA / "imagenet-sample-256")[:N]


@pytest.mark.parametrize("workers", [0, 1, 2])
def test_streamed_from_jpeg(benchmark, files, workers):
    benchmark.extra_info.update(images=BATCH * STEPS, workers=workers)
    schedule = CropSchedule(FileStore(files, SIZE), CROP, 0)
    benchmark.pedantic(lambda: list(batches(schedule, 0, STEPS, BATCH, workers=workers)), rounds=3, warmup_rounds=1)


def test_ram_cache_after_decoding(benchmark, files):
    schedule = CropSchedule(ImageStore(files, SIZE), CROP, 0)
    benchmark.extra_info.update(images=BATCH * STEPS)
    benchmark.pedantic(lambda: list(batches(schedule, 0, STEPS, BATCH)), rounds=3, warmup_rounds=1)
