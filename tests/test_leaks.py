"""Issue 31, N13: one leak check, by content, for every path that scores test images.

A copy of a training photo as BMP, re-encoded as JPEG or resized to half its size is refused, in one line with exit
code 2 and before any run folder exists, by ``ablate --test``, ``ablate`` with folds, ``tune`` and ``evaluate``
(``bench.data.sources.fingerprint``/``same_content``; the old check compared SHA-256 of the file bytes)."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from PIL import Image

from bench import ablate, evaluate, tune
from bench.data.sources import BUNDLED

import helpers

PHOTOS = sorted(BUNDLED.glob("*.png"))
TINY = ["--set", "size=32", "--set", "crop=32", "--set", "eval_size=32", "--set", "batch_size=4", "--steps", "2",
        "--set", "val_every=1", "--device", "cpu", "--no-progress", "--no-verify"]
KINDS = ("bmp", "jpeg", "resized")


def leaked_copy(src: Path, folder: Path, kind: str, name: str = "zz_copy") -> Path:
    """``src`` written into ``folder`` as a BMP, as a JPEG (quality 75) or as a PNG at half its size."""
    folder.mkdir(parents=True, exist_ok=True)
    with Image.open(src) as im:
        im = im.convert("RGB")
        if kind == "bmp":
            out = folder / f"{name}.bmp"
            im.save(out)
        elif kind == "jpeg":
            out = folder / f"{name}.jpg"
            im.save(out, quality=75)
        else:
            out = folder / f"{name}.png"
            im.resize((im.width // 2, im.height // 2), Image.BILINEAR).save(out)
    return out


def folder_of(folder: Path, photos: list[Path]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for p in photos:
        shutil.copy(p, folder / p.name)
    return folder


@pytest.mark.parametrize("kind", KINDS)
def test_ablate_refuses_a_test_set_with_a_copy_of_a_training_photo(tmp_path, kind, capsys):
    """``ablate --data d12 --test leak``: file 1 of the sorted 12 is a training photo (every 10th is validation)."""
    train = folder_of(tmp_path / "d12", PHOTOS[:12])
    test = folder_of(tmp_path / "leak", PHOTOS[20:23])
    leaked_copy(PHOTOS[1], test, kind)
    out = tmp_path / "run"
    rc, _, err = helpers.run(["--grid", "smoke", "--seeds", "1", "--data", train, "--test", test, "--out", out,
                              *TINY], capsys)
    helpers.one_error(rc, err, "also in the training set", "zz_copy", PHOTOS[1].name)
    assert not out.exists()


@pytest.mark.parametrize("kind", KINDS)
def test_ablate_folds_refuse_a_folder_that_holds_a_copy_of_one_of_its_photos(tmp_path, kind, capsys):
    """16 files, 4 folds: the copy (sorted last) is a test image of fold 3, its original one of fold 1."""
    data = folder_of(tmp_path / "d16", PHOTOS[:15])
    leaked_copy(PHOTOS[1], data, kind)
    out = tmp_path / "run"
    rc, _, err = helpers.run(["--grid", "smoke", "--seeds", "1", "--data", data, "--folds", "4", "--out", out,
                              *TINY], capsys)
    helpers.one_error(rc, err, "the splits must be disjoint", "zz_copy", PHOTOS[1].name)
    assert not out.exists()


@pytest.mark.parametrize("kind", KINDS)
def test_tune_refuses_a_test_split_with_a_copy_of_a_training_photo(tmp_path, kind, capsys):
    """16 files, no separate test set: position 15 (the copy) is a test image, position 1 (its original) trains."""
    data = folder_of(tmp_path / "d16", PHOTOS[:15])
    leaked_copy(PHOTOS[1], data, kind)
    out = tmp_path / "tune"
    rc = tune.main(["--loss", "mse", "--trials", "1", "--data", str(data), "--out", str(out), *TINY])
    helpers.one_error(rc, capsys.readouterr().err, "also in the training set", "zz_copy", PHOTOS[1].name)
    assert not out.exists()


@pytest.fixture(scope="module")
def small_run(tmp_path_factory) -> tuple[Path, Path]:
    """A 2-step smoke run on 12 bundled photos with 3 others as its test set; returns (run folder, train folder)."""
    base = tmp_path_factory.mktemp("leak_run")
    train = folder_of(base / "d12", PHOTOS[:12])
    test = folder_of(base / "t3", PHOTOS[20:23])
    out = base / "run"
    assert ablate.main(["--grid", "smoke", "--seeds", "1", "--models", "unet_vgg16", "--data", str(train), "--test",
                        str(test), "--out", str(out), *TINY]) == 0
    return out, train


@pytest.mark.parametrize("kind", KINDS)
def test_evaluate_refuses_a_test_set_with_a_copy_of_a_training_photo(small_run, tmp_path, kind, capsys):
    run_dir, _ = small_run
    capsys.readouterr()
    test = folder_of(tmp_path / "other", PHOTOS[16:19])
    leaked_copy(PHOTOS[1], test, kind)
    rc = evaluate.main([str(run_dir), "--test", str(test), "--no-progress"])
    helpers.one_error(rc, capsys.readouterr().err, "show training or validation images", "zz_copy")
    assert not (run_dir / "evaluations" / "other").exists()


def test_photos_that_differ_pass_every_check(tmp_path, capsys):
    """The check does not refuse distinct photos: the same 12 + 3 photos plan and load (dry run of the data)."""
    from bench.data.sources import make_splits

    train = folder_of(tmp_path / "d12", PHOTOS[:12])
    test = folder_of(tmp_path / "t3", PHOTOS[20:23])
    splits = make_splits(str(train), test=str(test), size=32)
    assert len(splits.test) == 3 and len(splits.train) + len(splits.val) == 12


def test_a_streamed_training_set_refuses_a_leaked_test_photo_before_scoring_it(tmp_path, capsys, monkeypatch):
    """Issue 30 item 3: ``--cache-mb 0`` streams the 12 photos; their fingerprints are taken in the background and
    checked before the first test score, then kept in the cache for bench.evaluate."""
    monkeypatch.setenv("COLORBENCH_CACHE", str(tmp_path / "cache"))
    train = folder_of(tmp_path / "d12", PHOTOS[:12])
    test = folder_of(tmp_path / "leak", PHOTOS[20:23])
    leaked_copy(PHOTOS[1], test, "jpeg")
    out = tmp_path / "run"
    rc, _, err = helpers.run(["--grid", "smoke", "--seeds", "1", "--models", "unet_vgg16", "--data", train, "--test",
                              test, "--out", out, "--cache-mb", "0", "--loader-workers", "0", *TINY], capsys)
    helpers.one_error(rc, err, "also in the training set", "zz_copy", PHOTOS[1].name, "nothing was scored")
    assert not any(r.get("model") == "unet_vgg16" for r in read_rows_if(out / "results.csv"))
    assert len(list((tmp_path / "cache" / "fingerprints").glob("*.npz"))) == 1


def test_evaluate_checks_a_streamed_run_against_its_cached_fingerprints(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLORBENCH_CACHE", str(tmp_path / "cache"))
    train = folder_of(tmp_path / "d12", PHOTOS[:12])
    out = tmp_path / "run"
    assert helpers.run(["--grid", "smoke", "--seeds", "1", "--models", "unet_vgg16", "--data", train, "--test",
                        folder_of(tmp_path / "t3", PHOTOS[20:23]), "--out", out, "--cache-mb", "0",
                        "--loader-workers", "0", *TINY], capsys)[0] == 0
    cached = list((tmp_path / "cache" / "fingerprints").glob("*.npz"))
    assert len(cached) == 1
    test = folder_of(tmp_path / "other", PHOTOS[16:19])
    leaked_copy(PHOTOS[2], test, "resized")
    rc = evaluate.main([str(out), "--test", str(test), "--no-progress"])
    helpers.one_error(rc, capsys.readouterr().err, "show training or validation images", "zz_copy")
    assert (tmp_path / "cache" / "fingerprints").glob("*.npz") and cached[0].is_file()


def read_rows_if(path):
    from bench.core.records import read_rows

    return read_rows(path) if path.is_file() else []
