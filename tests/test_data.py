"""Data sets, manifests, splits and the fixed-seed crop schedule (``bench.data.sources``), on the real photos."""
from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bench.data.sources import (BUNDLED, NAMED, CropSchedule, DataError, ImageStore, list_images, make_splits, resolve,
                        verify_manifest)


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _expected_split(files, val_every, test_every):
    """The documented rule, re-implemented: position i → test if i % t == t-1, else val if i % v == 0, else train."""
    out = {"train": [], "val": [], "test": []}
    for i, f in enumerate(sorted(files)):
        key = "test" if test_every and i % test_every == test_every - 1 else "val" if i % val_every == 0 else "train"
        out[key].append(f)
    return out


def _assert_disjoint(splits):
    train = {_sha(p) for p in splits.train}
    assert not train & {_sha(p) for p in splits.test}
    assert not train & {_sha(p) for p in splits.val}


@pytest.fixture
def small_copy(tmp_path) -> Path:
    """A copy of the bundled, downscaled Kodak24 (with its manifest) that a test may damage."""
    dst = tmp_path / "kodak24"
    shutil.copytree(BUNDLED, dst)
    return dst


# --------------------------------------------------------------------------------------------------- manifests


@pytest.mark.parametrize("name, count", [("imagenet-sample", None), ("kodak24", 24), ("cbsd68", 68)])
def test_named_sets_match_their_manifests(data_root, name, count):
    folder = data_root / NAMED[name]
    n = verify_manifest(folder)
    assert n == len(list_images(folder))
    if count is not None:
        assert n == count
    # independently: every image listed in SHA256SUMS has the listed hash
    listed = dict(reversed(line.split(maxsplit=1)) for line in (folder / "SHA256SUMS").read_text().splitlines() if line.strip())
    for p in list_images(folder)[:: max(1, n // 20)]:
        assert listed.get(f"./{p.name}", listed.get(p.name)) == _sha(p)


def test_bundled_set_matches_its_manifest():
    assert verify_manifest(BUNDLED) == 24


def test_changed_extra_or_missing_files_fail_the_manifest(small_copy):
    victim = sorted(small_copy.glob("*.png"))[3]
    data = bytearray(victim.read_bytes())
    data[-20] ^= 0xFF
    victim.write_bytes(bytes(data))
    with pytest.raises(DataError, match="1 missing or changed"):
        verify_manifest(small_copy)
    shutil.copy(BUNDLED / victim.name, victim)
    assert verify_manifest(small_copy) == 24
    shutil.copy(victim, small_copy / "extra.png")
    with pytest.raises(DataError, match="1 not listed"):
        verify_manifest(small_copy)
    (small_copy / "extra.png").unlink()
    victim.unlink()
    with pytest.raises(DataError, match="missing or changed"):
        verify_manifest(small_copy)
    (small_copy / "SHA256SUMS").unlink()
    with pytest.raises(DataError, match="no SHA256SUMS"):
        verify_manifest(small_copy)


def test_a_tampered_named_set_is_refused_unless_verification_is_off(tmp_path, small_copy):
    root = tmp_path / "root"
    root.mkdir()
    shutil.move(small_copy, root / "cbsd68")  # pose as a named set with a manifest
    victim = sorted((root / "cbsd68").glob("*.png"))[0]
    victim.write_bytes(victim.read_bytes()[:-1] + b"\x00")
    with pytest.raises(DataError, match="SHA256SUMS"):
        make_splits("cbsd68", root=root)
    assert make_splits("cbsd68", root=root, verify=False).names["train"] == "cbsd68"


# ------------------------------------------------------------------------------------------------------ splits


def test_imagenet_sample_split(data_root):
    """imagenet-sample trains on every file but each 10th (validation: 876/98) and tests on kodak24."""
    s = make_splits("imagenet-sample", root=data_root)
    files = list_images(data_root / "imagenet-sample-256")
    want = _expected_split(files, 10, None)
    assert s.train == want["train"] and s.val == want["val"]
    assert (len(s.train), len(s.val), len(s.test)) == (876, 98, 24)
    assert s.test == list_images(data_root / "kodak24")
    assert s.names == {"train": "imagenet-sample", "val": "imagenet-sample", "test": "kodak24"}
    _assert_disjoint(s)


@pytest.mark.parametrize("data, n", [("cbsd68", 68), (None, 24)])
def test_own_splits_follow_the_documented_rule(data_root, data, n):
    s = make_splits(data, root=data_root)
    files = list_images(data_root / "cbsd68") if data else list_images(BUNDLED)
    assert len(files) == n
    want = _expected_split(files, *((10, 10) if n >= 40 else (8, 4)))
    assert (s.train, s.val, s.test) == (want["train"], want["val"], want["test"])
    assert sorted(s.train + s.val + s.test) == sorted(files)
    if data is None:
        assert (len(s.train), len(s.val), len(s.test)) == (15, 3, 6)
    _assert_disjoint(s)


def test_splits_are_deterministic(data_root):
    a = make_splits("cbsd68", root=data_root)
    b = make_splits(str(data_root / "cbsd68"))  # the same folder by path
    assert (a.train, a.val, a.test) == (b.train, b.val, b.test)


def test_a_test_folder_holding_a_training_image_is_refused(tmp_path, data_root):
    src = list_images(data_root / "cbsd68")[:12]
    train_dir, test_dir = tmp_path / "train", tmp_path / "test"
    train_dir.mkdir()
    test_dir.mkdir()
    for p in src:
        shutil.copy(p, train_dir / p.name)
    for p in list_images(data_root / "kodak24")[:3]:
        shutil.copy(p, test_dir / p.name)
    ok = make_splits(str(train_dir), test=str(test_dir))
    assert len(ok.test) == 3
    leaked = ok.train[4]
    shutil.copy(leaked, test_dir / "renamed_copy.png")  # same content, other name
    with pytest.raises(DataError, match="also in the training set"):
        make_splits(str(train_dir), test=str(test_dir))


def test_unknown_missing_and_empty_data_are_clear_errors(tmp_path, data_root):
    with pytest.raises(DataError, match="not a named set \\(imagenet-sample, kodak24, cbsd68\\)"):
        resolve("nope", data_root)
    with pytest.raises(DataError, match="--data-root or BENCH_DATA"):
        resolve("cbsd68", None)
    assert resolve("kodak24", None) == ("kodak24-bundled", BUNDLED, True)
    with pytest.raises(DataError, match="not found"):
        resolve("cbsd68", tmp_path)
    with pytest.raises(DataError, match="does not exist"):
        list_images(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(DataError, match="no images"):
        make_splits(str(tmp_path / "empty"))
    (tmp_path / "tiny").mkdir()
    shutil.copy(list_images(BUNDLED)[0], tmp_path / "tiny" / "only.png")
    with pytest.raises(DataError, match="split .* is empty"):
        make_splits(str(tmp_path / "tiny"))


# ------------------------------------------------------------------------------------------ decoding and crops


@pytest.fixture(scope="module")
def store(data_root) -> ImageStore:
    return ImageStore(list_images(data_root / "cbsd68")[:7], 48)


def test_image_store_resizes_the_shorter_side(store, data_root):
    assert len(store) == 7 and not store.skipped
    for f, img in zip(store.files, store.images):
        with Image.open(f) as im:
            w, h = im.size
            ref = np.asarray(im.convert("RGB").resize((round(w * 48 / min(w, h)), round(h * 48 / min(w, h))),
                                                      Image.BILINEAR))
        assert img.dtype == torch.uint8 and min(img.shape[-2:]) == 48
        assert img.shape[-2:] == ref.shape[:2]
        assert np.abs(img.permute(1, 2, 0).numpy().astype(int) - ref).mean() < 2.0  # a bilinear resize of the photo
    crops = store.centre_crops(32)
    assert crops.shape == (7, 3, 32, 32)
    h, w = store.images[0].shape[-2:]
    assert torch.equal(crops[0], store.images[0][:, (h - 32) // 2 : (h - 32) // 2 + 32, (w - 32) // 2 : (w - 32) // 2 + 32])


def test_crop_of_image_i_in_epoch_e_depends_only_on_crop_seed_i_e(store):
    """Whatever the batch size or which batch asks for it, the crop of (i, e) is the same; the training seed plays
    no part (a schedule has none); another crop seed gives other crops."""
    n = len(store)
    crops = {}
    for bs in (1, 3, 4):
        sched = CropSchedule(store, 32, crop_seed=7)
        torch.manual_seed(bs)  # the global RNG (the training seed) must not matter
        np.random.seed(bs)
        for k in range(3 * n // bs):
            batch = sched.batch(k, bs)
            for (i, e), img in zip(sched.positions(k, bs), batch):
                if (i, e) in crops:
                    assert torch.equal(crops[i, e], img), (i, e, bs)
                else:
                    crops[i, e] = img.clone()
    assert len(crops) >= 2 * n
    sched = CropSchedule(store, 32, crop_seed=7)
    for e in range(2):
        assert sorted(sched.order(e).tolist()) == list(range(n))  # each epoch visits every image once
    assert not np.array_equal(sched.order(0), sched.order(1))
    other = CropSchedule(store, 32, crop_seed=8)
    assert [other.offset(i, 0) for i in range(n)] != [sched.offset(i, 0) for i in range(n)]
    for i in range(n):  # the crop is a window of the stored image at the recorded offset
        top, left, flip = sched.offset(i, 0)
        assert not flip
        assert torch.equal(crops[i, 0], store.images[i][:, top : top + 32, left : left + 32])


def test_crop_larger_than_the_images_is_refused(store):
    with pytest.raises(ValueError, match="larger"):
        CropSchedule(store, 64, 0)
