"""k-fold rotation of a data set without a separate test set (the bundled Kodak24 by default)."""
from __future__ import annotations

import numpy as np
import pytest

from bench.data.sources import BUNDLED, BUNDLED_FOLDS, DataError, default_folds, fold_splits, list_images


@pytest.mark.parametrize("folds", [2, 3, 4, 6])
def test_every_image_is_a_test_image_exactly_once(folds):
    files = list_images(BUNDLED)
    splits = fold_splits(None, folds)
    assert len(splits) == folds
    tested = [p for s in splits for p in s.test]
    assert sorted(tested) == sorted(files)  # a partition: all 24 once, none twice
    for s in splits:
        assert not set(s.train) & set(s.val) and not set(s.train) & set(s.test) and not set(s.val) & set(s.test)
        assert sorted(s.train + s.val + s.test) == sorted(files)  # each fold uses every image in one role
        assert s.val and s.train


def test_bundled_default_is_four_folds_of_15_3_6(monkeypatch):
    monkeypatch.delenv("BENCH_DATA", raising=False)
    assert BUNDLED_FOLDS == 4
    assert default_folds(None, None) == 4
    assert default_folds("kodak24", None) == 4  # without a data root, kodak24 is the bundled copy
    assert default_folds(None, "kodak24") == 1  # a separate test set: one split
    assert [(len(s.train), len(s.val), len(s.test)) for s in fold_splits()] == [(15, 3, 6)] * 4


def test_folds_are_deterministic_and_interleaved():
    a, b = fold_splits(None, 4), fold_splits(None, 4)
    assert [s.test for s in a] == [s.test for s in b]
    files = list_images(BUNDLED)
    assert a[1].test == files[1::4]


def test_folds_of_a_folder(tmp_path):
    from PIL import Image

    for i in range(10):
        Image.new("RGB", (32, 32), (i * 20, 100, 50)).save(tmp_path / f"im{i:02d}.png")
    (tmp_path / "broken.png").write_bytes(b"not an image")
    assert default_folds(str(tmp_path), None) == 1  # folds are the default for the bundled set only
    splits = fold_splits(str(tmp_path), 5)
    assert sorted(p.name for s in splits for p in s.test) == [f"im{i:02d}.png" for i in range(10)]
    # the unusable file is a (skipped) training file of fold 0 only: one warning, counted once
    assert [sum(p.name == "broken.png" for p in s.train) for s in splits] == [1, 0, 0, 0, 0]


@pytest.mark.parametrize("folds", [0, 1, 25])
def test_bad_number_of_folds_is_one_clear_error(folds):
    with pytest.raises(DataError, match="--folds"):
        fold_splits(None, folds)


# ---------------------------------------------------------------------------------------------- the grid with folds

TINY = ["--steps", "2", "--set", "val_every=1", "--set", "batch_size=4", "--set", "size=32", "--set", "crop=32",
        "--set", "eval_size=32", "--no-progress"]


@pytest.fixture(scope="module")
def fold_run(tmp_path_factory):
    """The smoke grid (mse, kl) with 2 folds of the bundled Kodak24 and one seed: 4 runs, tiny and fast."""
    from bench import ablate

    out = tmp_path_factory.mktemp("folds") / "run"
    argv = ["--grid", "smoke", "--folds", "2", "--seeds", "1", "--out", str(out), *TINY]
    assert ablate.main(argv) == 0
    return out, argv


def test_fold_runs_are_recorded_per_fold_and_cover_every_image(fold_run):
    import json

    from bench.core.records import read_rows

    out, _ = fold_run
    runs = read_rows(out / "runs.csv")
    trained = [r for r in runs if r["model"] != "(none)"]
    assert sorted((r["cell"], r["seed"], r["fold"]) for r in trained) == [
        ("kl", "0", "0"), ("kl", "0", "1"), ("mse", "0", "0"), ("mse", "0", "1")]
    assert all(r["folds"] == "2" and r["n_test"] == "12" for r in trained)
    files = sorted(p.name for p in list_images(BUNDLED))
    per_image = read_rows(out / "per_image.csv")
    for cell in ("grey", "mean_colour", "mse", "kl"):  # every image scored once per cell and seed, by the fold that tests it
        assert sorted(r["image"] for r in per_image if r["cell"] == cell) == files
    folds = {r["image"]: r["fold"] for r in per_image if r["cell"] == "mse"}
    assert {r["image"]: r["fold"] for r in per_image if r["cell"] == "kl"} == folds  # same images per fold
    meta = json.loads((out / "run.json").read_text())
    assert meta["folds"] == 2
    tests = [sorted(p.rsplit("/", 1)[-1] for p in s["test"]) for s in meta["fold_splits"]]
    assert sorted(p.rsplit("/", 1)[-1] for p in meta["splits"]["test"]) == files  # the whole test set
    assert sorted(tests[0] + tests[1]) == files and not set(tests[0]) & set(tests[1])
    assert {i for i, f in folds.items() if f == "1"} == set(tests[1])


def test_leaderboard_combines_the_folds_of_a_seed(fold_run):
    import pandas as pd

    from bench.core.records import read_rows
    from bench.reporting import leaderboard

    out, _ = fold_run
    board, failed = leaderboard.build(leaderboard.load_runs(out), leaderboard.load_per_image(out))
    assert failed.empty
    per_image = pd.DataFrame(read_rows(out / "per_image.csv"))
    per_image["psnr"] = per_image["psnr"].astype(float)
    for cell in ("mse", "kl", "grey", "mean_colour"):
        row = board[board["cell"] == cell].iloc[0]
        assert row["n"] == 1  # one seed: its two folds are one run of the leaderboard
        # the cell's PSNR is the mean over all 24 test images (both folds have 12: weights are equal)
        assert row["psnr_mean"] == pytest.approx(per_image.loc[per_image["cell"] == cell, "psnr"].mean(), abs=1e-9)


def test_rerun_with_folds_trains_nothing(fold_run, capsys):
    from bench import ablate
    from bench.core.records import read_rows

    out, argv = fold_run
    before = read_rows(out / "runs.csv")
    assert ablate.main(argv) == 0
    assert "4 runs (1 seed(s), 2 folds; 4 already done" in capsys.readouterr().err
    assert read_rows(out / "runs.csv") == before


@pytest.mark.parametrize("extra", [["--test", "kodak24"], ["--data", "imagenet-sample", "--data-root", "/nowhere"],
                                   ["--folds", "0"], ["--folds", "25"]])
def test_folds_with_a_separate_test_set_or_out_of_range_is_a_usage_error(tmp_path, capsys, extra):
    from bench import ablate

    rc = ablate.main(["--grid", "smoke", "--out", str(tmp_path / "x"), *TINY,
                      *(["--folds", "2"] if "--folds" not in extra else []), *extra])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--folds" in err[0]


def test_combine_folds_weights_by_test_images_and_fails_incomplete_seeds():
    import pandas as pd

    from bench.data.folds import combine_folds

    rows = pd.DataFrame([
        {"model": "m", "cell": "a", "seed": "0", "fold": "0", "folds": "2", "status": "ok", "psnr": "20", "n_test": "3",
         "steps": "10", "batch_size": "4", "train_time_s": "1.0", "psnr_pooled": "20"},
        {"model": "m", "cell": "a", "seed": "0", "fold": "1", "folds": "2", "status": "ok", "psnr": "24", "n_test": "1",
         "steps": "10", "batch_size": "4", "train_time_s": "3.0", "psnr_pooled": "30"},
        {"model": "m", "cell": "b", "seed": "0", "fold": "0", "folds": "2", "status": "ok", "psnr": "20", "n_test": "3",
         "steps": "10", "batch_size": "4", "train_time_s": "1.0"},
        {"model": "m", "cell": "c", "seed": "0", "fold": "0", "folds": "2", "status": "ok", "psnr": "20", "n_test": "2",
         "steps": "10", "batch_size": "4", "train_time_s": "1.0"},
        {"model": "m", "cell": "c", "seed": "0", "fold": "1", "folds": "2", "status": "failed", "error": "loss is nan",
         "failed_step": "7", "n_test": "2", "steps": "10", "batch_size": "4", "train_time_s": ""},
        {"model": "(none)", "cell": "grey", "seed": "0", "fold": "", "status": "ok", "psnr": "19", "n_test": "4"},
    ])
    out = combine_folds(rows).set_index("cell")
    assert len(out) == 4
    assert out.loc["a", "psnr"] == pytest.approx((3 * 20 + 1 * 24) / 4)  # the mean over the 4 test images
    # pooled PSNR: the MSE over every pixel of the 4 images (3 at MSE 0.01, 1 at 0.001), not the mean of decibels
    assert out.loc["a", "psnr_pooled"] == pytest.approx(-10 * np.log10((3 * 0.01 + 1 * 0.001) / 4))
    assert out.loc["a", "n_test"] == 4 and out.loc["a", "train_time_s"] == pytest.approx(4.0)
    assert out.loc["a", "train_img_per_s"] == pytest.approx(80 / 4.0) and out.loc["a", "status"] == "ok"
    assert out.loc["b", "status"] == "failed" and "fold 1: not finished" in out.loc["b", "error"]
    assert out.loc["c", "status"] == "failed" and "fold 1: loss is nan" in out.loc["c", "error"]
    assert out.loc["grey", "psnr"] == "19"  # rows without folds are left alone


def test_which_bundled_photos_train_how_many_folds():
    """What docs/data.md says: kodim01 and kodim12 train no fold's network (they only validate and test)."""
    from collections import Counter

    splits = fold_splits(None, 4)
    trains = Counter(p.name for s in splits for p in s.train)
    never = sorted(p.name for s in splits for p in s.test if not trains[p.name])
    assert never == ["kodim01.png", "kodim12.png"]
    assert sorted(Counter(trains[p.name] for s in splits for p in s.test).items()) == [(0, 2), (1, 2), (2, 2), (3, 18)]
