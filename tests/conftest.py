"""Shared fixtures: real photographs for unit tests (the bundled Kodak24, always there), the data sets in
../shared/data or $BENCH_DATA for the tests that need them, and an offline TORCH_HOME.

A test that takes the ``data_root`` fixture is marked ``datasets``: without the data sets it is skipped with the
reason (``BENCH_REQUIRE_DATA=1`` turns the skip into a failure, for CI), and ``pytest -m "not datasets"`` runs the
rest.
"""
from __future__ import annotations

import os
from pathlib import Path

import urllib.error

# The tests start several worker processes at once on 2 cores: OpenMP threads that spin at barriers would wait for
# descheduled peers (9× slower steps, results/step-speed-cpu.md). Set before torch loads; subprocesses inherit it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402

from bench.data.sources import BUNDLED  # the Kodak24 that ships with the package

ROOT = Path(__file__).resolve().parent.parent
DATA_ROOT = Path(os.environ.get("BENCH_DATA", ROOT.parent / "shared" / "data")).resolve()

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

DATA_SETS = ("imagenet-sample-256", "kodak24", "cbsd68")


@pytest.hookimpl(tryfirst=True)  # before -m selects by marker
def pytest_collection_modifyitems(config, items):
    for item in items:
        if "data_root" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.datasets)


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The folder with the data sets imagenet-sample-256, kodak24 and cbsd68 ($BENCH_DATA, else ../shared/data)."""
    missing = [name for name in DATA_SETS if not (DATA_ROOT / name).is_dir()]
    if missing:
        msg = (f"needs the data sets {', '.join(missing)} under {DATA_ROOT} "
               f"(set BENCH_DATA to the folder that holds them)")
        if os.environ.get("BENCH_REQUIRE_DATA") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    return DATA_ROOT


@pytest.fixture(scope="session")
def real_photos() -> list[Path]:
    """Twelve real photos from the bundled Kodak24 (every second one): there without any data set."""
    return sorted(BUNDLED.glob("*.png"))[::2]


@pytest.fixture(scope="session")
def real_batch(real_photos) -> torch.Tensor:
    """The real photos as a uint8 batch of 64×64 centre crops (``12×3×64×64``)."""
    from bench.data.sources import ImageStore

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


@pytest.fixture(autouse=True)
def _forget_noted_secrets():
    """Passwords noted by one test's command line (``bench.core.records.note_secrets``) are not redacted in the
    next's."""
    from bench.core import records

    yield
    records._SECRETS.clear()
    records._PIECES.clear()


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """colorbench's cache (generated control sets, fingerprints, shared decoded sets) in a folder of this session:
    the tests leave nothing in ~/.cache, and subprocesses they start inherit the variable."""
    if "COLORBENCH_CACHE" in os.environ:
        yield
        return
    os.environ["COLORBENCH_CACHE"] = str(tmp_path_factory.mktemp("colorbench-cache"))
    try:
        yield
    finally:
        os.environ.pop("COLORBENCH_CACHE", None)
