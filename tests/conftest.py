"""Shared fixtures: the real photographs in ../shared/data (or $BENCH_DATA) and small decoded batches of them."""
from __future__ import annotations

import os
from pathlib import Path

import urllib.error

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
DATA_ROOT = Path(os.environ.get("BENCH_DATA", ROOT.parent / "shared" / "data")).resolve()

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The folder with imagenet-sample-256, kodak24 and cbsd68 (required: CI has it at ../shared/data)."""
    if not (DATA_ROOT / "kodak24").is_dir():
        pytest.fail(f"real test photographs not found at {DATA_ROOT}; set BENCH_DATA to the shared data folder")
    return DATA_ROOT


@pytest.fixture(scope="session")
def real_photos(data_root) -> list[Path]:
    """Twelve real photos: eight from imagenet-sample, four from kodak24."""
    inet = sorted((data_root / "imagenet-sample-256").glob("*.jpg"))[::100][:8]
    kodak = sorted((data_root / "kodak24").glob("*.png"))[:4]
    return inet + kodak


@pytest.fixture(scope="session")
def real_batch(real_photos) -> torch.Tensor:
    """The real photos as a uint8 batch of 64×64 centre crops (``12×3×64×64``)."""
    from bench.data import ImageStore

    return ImageStore(real_photos, 64).centre_crops(64)


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    """TORCH_HOME in a temporary folder, and any download attempt fails like an offline machine (URLError)."""
    home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("offline (test)")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    import torchvision.models._api as tv_api

    if hasattr(tv_api, "load_state_dict_from_url"):
        monkeypatch.setattr(tv_api, "load_state_dict_from_url", offline)
    return home
