"""Issue 30, items 1–2: a training set larger than ``--cache-mb`` is streamed from disk by DataLoader workers and
feeds the batches the RAM cache would (byte for byte, any number of workers, across a resume); ImageFolder trees
and file lists are data sources."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

from bench.core.records import read_rows
from bench.data import loader
from bench.data.sources import CropSchedule, DataError, ImageStore, list_images, make_splits, resolve
from helpers import one_error, run

TINY = ["--set", "size=32", "--set", "crop=32", "--set", "eval_size=32", "--set", "batch_size=4", "--steps", "3",
        "--device", "cpu", "--no-progress", "--folds", "1", "--seeds", "1"]


def photos(folder, n, seed=0, classes=3):
    """``n`` small JPEGs of several sizes in an ImageFolder tree (``class<k>/sub/…``); returns them sorted."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        h, w = int(rng.integers(40, 72)), int(rng.integers(40, 96))
        base = rng.integers(0, 256, 3)
        img = np.clip(base + rng.normal(0, 40, (h, w, 3)) + np.linspace(0, 80, w)[None, :, None], 0, 255)
        path = folder / f"class{i % classes}" / ("sub" if i % 2 else "") / f"img{i:04d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img.astype(np.uint8)).save(path, quality=90)
        out.append(path)
    return sorted(out)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tree")
    return folder, photos(folder, 30)


def ram_batches(files, reference=None, start=0, steps=10, batch=4):
    schedule = CropSchedule(ImageStore(files, 40), 32, crop_seed=5)
    return list(loader.batches(schedule, start, steps, batch, reference))


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("reference", [None, "same", "other"])
def test_streamed_batches_are_the_ram_cache_batches_byte_for_byte(tree, workers, reference):
    """10 steps of 4 over 30 images: the stream crosses into a second epoch (another order, other crops)."""
    _, files = tree
    streamed = list(loader.batches(CropSchedule(loader.FileStore(files, 40), 32, crop_seed=5), 0, 10, 4, reference,
                                   workers=workers))
    expected = ram_batches(files, reference)
    assert len(streamed) == len(expected) == 10
    for (u8, ref), (u8_ram, ref_ram) in zip(streamed, expected):
        assert u8.dtype == torch.uint8 and torch.equal(u8, u8_ram)
        assert (ref is None) == (reference is None) and (ref is None or torch.equal(ref, ref_ram))


def test_a_resumed_stream_starts_where_the_run_stopped(tree):
    _, files = tree
    resumed = list(loader.batches(CropSchedule(loader.FileStore(files, 40), 32, crop_seed=5), 6, 10, 4, workers=2))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(resumed, ram_batches(files)[6:], strict=True))


def test_an_unusable_file_met_while_streaming_is_replaced_and_counted_once(tmp_path):
    files = photos(tmp_path, 8)
    files[3].write_bytes(b"not a jpeg")
    store = loader.FileStore(files, 40)
    with pytest.warns(UserWarning, match="skipping"):
        out = list(loader.batches(CropSchedule(store, 32, crop_seed=1), 0, 6, 4, workers=0))  # 3 epochs
    assert all(u8.shape == (4, 3, 32, 32) for u8, _ in out)
    assert [s[0] for s in store.skipped] == [str(files[3])] and "unreadable" in store.skipped[0][1]


def test_the_estimate_of_the_decoded_size_is_close_to_the_ram_cache(tree):
    _, files = tree
    actual = sum(img.numel() for img in ImageStore(files, 40).images) / 2**20
    assert loader.estimate_mb(files, 40, sample=64) == pytest.approx(actual, rel=1e-6)  # every header read
    assert loader.estimate_mb(files, 40, sample=8) == pytest.approx(actual, rel=0.15)
    assert 0 < loader.default_cache_mb() < loader.available_mb()


def test_an_imagefolder_tree_at_any_depth_is_listed_in_path_order(tree):
    folder, files = tree
    assert list_images(folder) == files
    assert {p.parent.relative_to(folder).as_posix() for p in files} >= {"class0", "class1/sub"}


def test_file_lists_txt_and_csv_keep_their_order_and_resolve_relative_paths(tree, tmp_path):
    folder, files = tree
    chosen = files[::-1][:20]
    txt = folder / "train.txt"
    txt.write_text("# my list\n" + "\n".join(p.relative_to(folder).as_posix() for p in chosen) + "\n\n")
    with open(folder / "train.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label"])
        w.writerows([[str(p), p.parent.name] for p in chosen])  # absolute paths
    for lst in (txt, folder / "train.csv"):
        assert list_images(lst) == chosen
        assert resolve(str(lst), None)[0] == "train"
    splits = make_splits(str(txt), None, verify=False)
    assert splits.train[0] == chosen[1] and splits.key("train", chosen[1]) == chosen[1].relative_to(folder).as_posix()
    (tmp_path / "bad.txt").write_text("nowhere.jpg\n")
    with pytest.raises(DataError, match="do not exist"):
        list_images(tmp_path / "bad.txt")


def test_a_streamed_split_checks_validation_against_test_and_caps_validation(tree, monkeypatch):
    import bench.data.sources as data

    folder, files = tree
    monkeypatch.setattr(data, "VAL_LIMIT", 2)
    splits = make_splits(str(folder), None, verify=False, size=40, stream=True)
    assert len(splits.val) == 2 and not any(p in splits.decoded for p in splits.train)  # no training file decoded


def test_cache_mb_zero_streams_and_trains_the_same_run_as_the_ram_cache(tree, tmp_path, capsys):
    """End to end through ``bench.ablate``: the streamed run's losses and scores equal the RAM-cached run's."""
    folder, _ = tree
    rows = {}
    for name, extra in (("ram", []), ("stream", ["--cache-mb", "0", "--loader-workers", "1"])):
        rc, out, err = run(["--grid", "tiny", "--data", folder, "--out", tmp_path / name, *TINY, *extra], capsys)
        assert rc == 0, err
        assert ("streamed from disk" in err) == (name == "stream")
        rows[name] = {(r["model"], r["cell"]): r for r in read_rows(tmp_path / name / "results.csv")}
    assert rows["ram"].keys() == rows["stream"].keys()
    for key, r in rows["ram"].items():
        for col in ("final_loss", "val_psnr", "psnr"):
            assert r[col] == rows["stream"][key][col], (key, col)
    meta = {name: json.loads((tmp_path / name / "run.json").read_text()) for name in rows}
    assert meta["stream"]["splits"]["train"] == meta["ram"]["splits"]["train"]
    assert meta["stream"]["fingerprints"] == {} and meta["ram"]["fingerprints"]["train"]  # taken later, by evaluate


def test_bad_cache_and_worker_counts_are_one_line(tmp_path, capsys):
    for argv, needle in ((["--cache-mb", "-1"], "--cache-mb"), (["--loader-workers", "100000"], "--loader-workers")):
        rc, _, err = run(["--grid", "tiny", "--out", tmp_path / "r", *argv], capsys)
        one_error(rc, err, needle)


def test_workers_of_one_machine_share_one_decoded_copy(tmp_path, monkeypatch):
    """``COLORBENCH_SHARED_CACHE`` (set by ``--workers``): the first decode writes one uint8 file; the next reads
    it memory-mapped, decodes nothing, and gets the same pixels and the same reasons for unusable files."""
    import bench.data.sources as data

    files = photos(tmp_path / "d", 6)
    files[2].write_bytes(b"broken")
    monkeypatch.setenv("COLORBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv(data.SHARED_CACHE_ENV, "1")
    first = data.decode_files(files, 40)
    assert len(list((tmp_path / "cache" / "decoded").glob("*.u8"))) == 1

    def no_decoding(*args):
        raise AssertionError("decoded again")

    monkeypatch.setattr(data, "_decode", no_decoding)
    second = data.decode_files(files, 40)
    for p in files:
        (a, why_a), (b, why_b) = first[p], second[p]
        assert why_a == why_b and (a is None) == (b is None) and (a is None or torch.equal(a, b))
    with pytest.warns(UserWarning, match="skipping"):
        store = ImageStore(files, 40, decoded=second)
    assert len(store) == 5 and torch.equal(store.centre_crops(32), ImageStore([f for f in files if f != files[2]],
                                                                              40, decoded=first).centre_crops(32))


@pytest.mark.parametrize("stream", [False, True])
def test_the_ranks_of_a_data_parallel_run_read_their_shards_of_every_global_batch(tree, stream):
    """``part=(r, N)``: the shards of ranks 0 … N−1, in order, are the one-process batch (``distributed.shard``)."""
    from bench.training import distributed

    _, files = tree
    store = loader.FileStore(files, 40) if stream else ImageStore(files, 40)
    shards = [list(loader.batches(CropSchedule(store, 32, crop_seed=5), 2, 9, 4, "same", part=(r, 2)))
              for r in range(2)]
    for k, (u8, ref) in enumerate(ram_batches(files, "same", start=2, steps=9)):
        assert torch.equal(torch.cat([shards[0][k][0], shards[1][k][0]]), u8)
        assert torch.equal(torch.cat([shards[0][k][1], shards[1][k][1]]), ref)
        assert torch.equal(shards[1][k][0], distributed.shard(u8, 1, 2))


def test_the_loader_workers_of_a_launched_worker_are_its_share_of_the_cores(monkeypatch):
    monkeypatch.setattr(loader.os, "cpu_count", lambda: 9)
    monkeypatch.delenv("COLORBENCH_WORKER", raising=False)
    assert loader.default_workers() == 8
    monkeypatch.setenv("COLORBENCH_WORKER", "1/2 4242")  # bench.grid.workers' tag: worker 1 of 2
    assert loader.default_workers() == 4
    monkeypatch.setenv("COLORBENCH_WORKER", "3/16 4242")
    assert loader.default_workers() == 1


def test_a_set_that_surely_fits_is_kept_in_ram_without_reading_a_header(tree, monkeypatch):
    _, files = tree

    def no_headers(*args, **kwargs):
        raise AssertionError("headers read")

    monkeypatch.setattr(loader, "estimate_mb", no_headers)
    assert not loader.streams(files, 40, budget_mb=30 * 40 * 40 * 3 * loader.SURE_ASPECT / 2**20)
    monkeypatch.undo()
    assert loader.streams(files, 40, budget_mb=0.01) and not loader.streams(files, 40, budget_mb=1.0)
