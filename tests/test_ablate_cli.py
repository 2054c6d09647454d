"""The ablation runner end to end through its command line (``bench.ablate.main``, in process), on real photos.

Only the CLI contract is tested — exit codes, stderr, and the files of the run folder — never the runner's internals
(it is being rebuilt around Optuna trials). Tiny settings: width 0.25 (quick preset), 32-px images and crops,
batches of 4, 3 steps.
"""
from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from skimage.color import lab2rgb, rgb2lab

from bench import ablate
from bench.config import grids
from bench.data.sources import CropSchedule, ImageStore
from helpers import one_error, run

TINY = ["--set", "size=32", "--set", "crop=32", "--set", "eval_size=32", "--set", "batch_size=4", "--steps", "3",
        "--device", "cpu", "--no-progress"]
LOSSES_GRID = [c.name for c in grids.get("losses").cells]  # the grid's cells, whatever they are today


def rows(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


assert_usage_error = one_error


@pytest.fixture
def no_training(monkeypatch):
    """Training must not start: drawing a training batch fails the test."""

    def forbidden(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(CropSchedule, "batch", forbidden)


# --------------------------------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def e2e(tmp_path_factory, data_root):
    """The ``losses`` grid, 2 seeds, on cbsd68 (named, so verified against its manifest): run once, then again."""
    out = tmp_path_factory.mktemp("e2e") / "run"
    argv = ["--grid", "losses", "--seeds", "2", "--data", "cbsd68", "--data-root", str(data_root), "--out", str(out),
            *TINY]
    rc = ablate.main(argv)
    snapshot = {name: (out / name).read_bytes() for name in ("runs.csv", "per_image.csv", "history.csv")}
    with pytest.MonkeyPatch.context() as mp:  # the rerun must not train: drawing a batch would fail it
        mp.setattr(CropSchedule, "batch", lambda *a, **k: (_ for _ in ()).throw(AssertionError("trained again")))
        rc2 = ablate.main(argv)
    return {"rc": rc, "rc2": rc2, "out": out, "first": snapshot}


def test_e2e_writes_every_artifact(e2e):
    assert e2e["rc"] == 0
    for name in ("runs.csv", "per_image.csv", "history.csv", "leaderboard.md", "leaderboard.csv", "figures/psnr.png",
                 "run.json"):
        assert (e2e["out"] / name).is_file(), name
        assert (e2e["out"] / name).stat().st_size > 0, name
    with Image.open(e2e["out"] / "figures" / "psnr.png") as im:
        assert im.format == "PNG" and im.size[0] > 100


def test_e2e_runs_csv_has_one_row_per_cell_and_seed_plus_the_baselines(e2e):
    runs = rows(e2e["out"] / "runs.csv")
    grey = [r for r in runs if r["cell"] == "grey"]
    trained = [r for r in runs if r["model"] != "(none)"]
    assert len(grey) == 1 and sorted(r["cell"] for r in runs if r["model"] == "(none)") == ["grey", "mean_colour",
                                                                                             "oracle_tint"]
    assert sorted((r["cell"], r["seed"]) for r in trained) == sorted((c, s) for c in LOSSES_GRID for s in ("0", "1"))
    assert all(r["status"] == "ok" for r in runs)
    assert all(r["n_skipped"] == "0" for r in runs)
    assert {r["loss"] for r in trained} == {c.changes.get("loss", "mse") for c in grids.get("losses").cells}
    assert {"mse", "l1", "huber", "kl", "kl_rebal"} <= set(LOSSES_GRID)
    for r in runs:
        assert 5 < float(r["psnr"]) < 60 and 0 < float(r["ssim"]) <= 1
    assert {r["data_train"] for r in runs} == {"cbsd68"}


def test_e2e_per_image_history_and_run_json(e2e):
    runs = rows(e2e["out"] / "runs.csv")
    n_test = int(runs[0]["n_test"])
    assert n_test == 6  # cbsd68: 68 images → 55 / 7 / 6
    per_image = rows(e2e["out"] / "per_image.csv")
    assert len(per_image) == len(runs) * n_test
    for r in runs:  # every run's PSNR is the mean of its per-image PSNRs
        mine = [float(p["psnr"]) for p in per_image if (p["model"], p["cell"], p["seed"]) == (r["model"], r["cell"], r["seed"])]
        assert len(mine) == n_test
        assert float(r["psnr"]) == pytest.approx(np.mean(mine), abs=1e-6)
    history = rows(e2e["out"] / "history.csv")
    assert len(history) == 2 * len(LOSSES_GRID)  # validated once, at the last step
    assert {h["step"] for h in history} == {"3"}
    meta = json.loads((e2e["out"] / "run.json").read_text())
    assert len(meta["splits"]["test"]) == n_test and len(meta["splits"]["train"]) == 55
    assert meta["skipped"] == []


def test_e2e_grey_row_matches_an_independent_computation(e2e):
    """The grey row's PSNR: the run's test images (decoded and centre-cropped as in training), with ab = 0, through
    skimage and a numpy PSNR."""
    meta = json.loads((e2e["out"] / "run.json").read_text())
    crops = ImageStore([Path(p) for p in meta["splits"]["test"]], 32).centre_crops(32).permute(0, 2, 3, 1).numpy()
    psnrs = []
    for img in crops:
        lab = rgb2lab(img)
        lab[..., 1:] = 0
        grey = np.clip(lab2rgb(lab), 0, 1)
        psnrs.append(10 * np.log10(1 / np.mean((grey - img / 255.0) ** 2)))
    grey_row = [r for r in rows(e2e["out"] / "runs.csv") if r["cell"] == "grey"][0]
    assert float(grey_row["psnr"]) == pytest.approx(np.mean(psnrs), abs=0.01)


def test_e2e_mean_colour_row_matches_an_independent_computation(e2e):
    """The mean-colour row: the mean ab of the training images' pixels (decoded at the run's size, through
    skimage), used as a constant ab on every test image."""
    meta = json.loads((e2e["out"] / "run.json").read_text())
    train = ImageStore([Path(p) for p in meta["splits"]["train"]], 32)
    ab = np.concatenate([rgb2lab(img.permute(1, 2, 0).numpy())[..., 1:].reshape(-1, 2) for img in train.images])
    const = ab.mean(axis=0)
    assert meta["mean_ab"][0] == pytest.approx(list(const), abs=0.01)
    crops = ImageStore([Path(p) for p in meta["splits"]["test"]], 32).centre_crops(32).permute(0, 2, 3, 1).numpy()
    psnrs = []
    for img in crops:
        lab = rgb2lab(img)
        lab[..., 1:] = const
        pred = np.clip(lab2rgb(lab), 0, 1)
        psnrs.append(10 * np.log10(1 / np.mean((pred - img / 255.0) ** 2)))
    row = next(r for r in rows(e2e["out"] / "runs.csv") if r["cell"] == "mean_colour")
    assert float(row["psnr"]) == pytest.approx(np.mean(psnrs), abs=0.01)
    assert json.loads(row["mean_ab"]) == meta["mean_ab"]


def test_e2e_leaderboard_lists_grey_and_every_cell(e2e):
    board = rows(e2e["out"] / "leaderboard.csv")
    assert sorted(r["cell"] for r in board) == sorted(LOSSES_GRID + ["grey", "mean_colour", "oracle_tint"])
    from bench.core.records import is_untrained

    ranks = [r["rank"] for r in board if not is_untrained(r["cell"])]
    assert [int(float(r)) for r in ranks] == list(range(1, len(LOSSES_GRID) + 1))  # the untrained rows: no rank
    assert all(not r["rank"] for r in board if is_untrained(r["cell"]))
    psnr = [float(r["psnr_mean"]) for r in board]
    assert psnr == sorted(psnr, reverse=True)
    runs = rows(e2e["out"] / "runs.csv")
    for r in board:
        mine = [float(x["psnr"]) for x in runs if x["cell"] == r["cell"]]
        assert float(r["psnr_mean"]) == pytest.approx(np.mean(mine), abs=1e-6)
        assert int(r["n"]) == (1 if is_untrained(r["cell"]) else 2)
    md = (e2e["out"] / "leaderboard.md").read_text()
    for cell in LOSSES_GRID + ["grey", "mean_colour", "oracle_tint"]:
        assert f"| {cell} " in md


def test_e2e_rerun_trains_nothing_and_duplicates_nothing(e2e):
    assert e2e["rc2"] == 0
    for name, before in e2e["first"].items():
        assert (e2e["out"] / name).read_bytes() == before, name


# ---------------------------------------------------------------------------------------------- bad configurations


@pytest.fixture
def tiny_run(tmp_path, data_root):
    """argv of a cheap run (smoke grid, 1 seed, cbsd68) in a fresh folder."""
    out = tmp_path / "out"
    return out, ["--grid", "smoke", "--seeds", "1", "--data", "cbsd68", "--data-root", str(data_root),
                 "--out", str(out), *TINY]


BAD = {
    "unknown grid": (["--grid", "nope"], ["unknown grid 'nope'", "losses", "smoke"]),
    "unknown loss": (["--set", "loss=nope"], ["unknown loss 'nope'", "available:", "mse", "kl"]),
    "unknown model": (["--models", "nope"], ["unknown model 'nope'", "available:", "unet_vgg16"]),
    "unknown data set": (["--data", "nope"], ["nope", "imagenet-sample", "kodak24", "cbsd68"]),
    "zero lr": (["--lr", "0"], ["learning rate must be positive"]),
    "negative lr": (["--lr", "-1"], ["learning rate must be positive"]),
    "negative style weight": (["--set", 'loss_params={"style_weight": -1}'], ["style_weight must be positive"]),
    "nan lr": (["--lr", "nan"], ["--lr", "finite"]),
    "inf lr": (["--lr", "inf"], ["--lr", "finite"]),
    "crop too large": (["--set", "crop=4096"], ["crop"]),
    "size too large": (["--set", "size=4096", "--set", "crop=4096", "--set", "eval_size=4096"], ["4096", "1024"]),
    "zero steps": (["--steps", "0"], ["steps"]),
    "zero seeds": (["--seeds", "0"], ["--seeds"]),
    "unknown config key": (["--set", "nope=1"], ["nope"]),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_configuration_is_one_line_exit_2_before_training(case, tiny_run, capsys, no_training):
    out, argv = tiny_run
    extra, needles = BAD[case]
    rc, _, err = run(argv + extra, capsys)  # argparse takes the last --grid/--data/--lr/--seeds given
    assert_usage_error(rc, err, *needles)
    assert not (out / "runs.csv").exists()


def test_unwritable_output_folder(tmp_path, tiny_run, capsys, no_training):
    """Tests run as root, so permissions stop nothing: the output folder's parent is a regular file instead."""
    _, argv = tiny_run
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    rc, _, err = run(argv + ["--out", blocker / "run"], capsys)
    assert_usage_error(rc, err, "not writable", str(blocker / "run"))


@pytest.mark.parametrize("kind", ["missing", "empty", "unreadable only"])
def test_missing_or_empty_data_folder(kind, tmp_path, tiny_run, capsys, no_training):
    _, argv = tiny_run
    folder = tmp_path / "data"
    if kind != "missing":
        folder.mkdir()
    if kind == "unreadable only":
        (folder / "a.jpg").write_bytes(b"")
        (folder / "b.png").write_text("not an image")
    rc, _, err = run(argv + ["--data", folder], capsys)
    assert_usage_error(rc, err, str(folder))


def test_imagenet_encoder_weights_missing_offline(torch_home, tiny_run, capsys, no_training):
    """``--encoder-weights imagenet`` without the checkpoint on an offline machine: exit 2 naming the file; at the
    quick preset's width 0.25 the message says pretrained weights need width 1."""
    home = torch_home
    _, argv = tiny_run
    rc, _, err = run(argv + ["--encoder-weights", "imagenet", "--set", "width=1"], capsys)
    assert_usage_error(rc, err, str(home / "hub" / "checkpoints" / "vgg16-397923af.pth"), "TORCH_HOME")
    rc, _, err = run(argv + ["--encoder-weights", "imagenet"], capsys)
    assert_usage_error(rc, err, "width=1.0")

    # The encoder's checkpoint present, but not the VGG-19 inside the AdaIN loss: still refused before training.
    ckpt = home / "hub" / "checkpoints" / "vgg16-397923af.pth"
    ckpt.parent.mkdir(parents=True)
    torch.save(torchvision.models.vgg16(weights=None).state_dict(), ckpt)
    rc, _, err = run(argv + ["--encoder-weights", "imagenet", "--set", "width=1", "--grid", "losses"], capsys)
    assert_usage_error(rc, err, str(home / "hub" / "checkpoints" / "vgg19-dcbb9e9d.pth"), "TORCH_HOME")


@pytest.mark.parametrize("damage", ["extra field", "binary garbage", "missing field"])
def test_damaged_runs_csv_is_reported_not_overwritten(damage, tiny_run, capsys, no_training):
    out, argv = tiny_run
    out.mkdir()
    good = "model,cell,seed,status,psnr\nunet_vgg16,mse,0,ok,21.5\n"
    body = {"extra field": good + "unet_vgg16,kl,0,ok,20.1,surprise\n",
            "binary garbage": None,
            "missing field": good + "unet_vgg16,kl\n"}[damage]
    data = body.encode() if body else good.encode() + bytes(range(128, 256)) + b"\x00\xff\xfe\n"
    (out / "runs.csv").write_bytes(data)
    rc, _, err = run(argv, capsys)
    assert_usage_error(rc, err, str(out / "runs.csv"))
    assert (out / "runs.csv").read_bytes() == data


# ----------------------------------------------------------------------------------------------------- divergence


def test_a_diverging_cell_is_recorded_as_failed_and_the_grid_goes_on(tiny_run, capsys, monkeypatch):
    """The KL cell's loss turns NaN at step 2 (patched): its row says failed, with the step and the reason; the MSE
    cell still trains, and the leaderboard lists the failure separately."""
    import losses.kl

    original = losses.kl.KLLoss.forward
    calls = {"n": 0}

    def nan_from_step_2(self, *args, **kwargs):
        calls["n"] += 1
        out = original(self, *args, **kwargs)
        return out * float("nan") if calls["n"] >= 2 else out

    monkeypatch.setattr(losses.kl.KLLoss, "forward", nan_from_step_2)
    out, argv = tiny_run
    rc, _, err = run(argv, capsys)
    assert rc == 0, err
    runs = {r["cell"]: r for r in rows(out / "runs.csv")}
    assert runs["mse"]["status"] == "ok" and runs["grey"]["status"] == "ok"
    assert runs["kl"]["status"] == "failed"
    assert runs["kl"]["failed_step"] == "2"
    assert "nan" in runs["kl"]["error"].lower()
    board = rows(out / "leaderboard.csv")
    assert sorted(r["cell"] for r in board) == ["grey", "mean_colour", "mse", "oracle_tint"]
    md = (out / "leaderboard.md").read_text()
    ranked, failed = md.split("## Failed runs")
    assert "| kl " not in ranked and "| mse " in ranked
    assert "| kl " in failed and "loss is nan" in failed
    assert re.search(r"\| 2(\.0)? ", failed)  # the step (bench.reporting.leaderboard prints it as a float: 2.0)


def test_lr_1e30_diverges_every_cell_and_the_run_still_finishes(tiny_run, capsys):
    out, argv = tiny_run
    rc, _, err = run(argv + ["--lr", "1e30"], capsys)
    assert rc == 0, err
    runs = {r["cell"]: r for r in rows(out / "runs.csv")}
    for cell in ("mse", "kl"):
        # the head starts at zero, so the first step's loss is finite; the huge update overflows at step 2 or 3
        assert runs[cell]["status"] == "failed" and runs[cell]["failed_step"] in ("2", "3"), runs[cell]
    assert "## Failed runs" in (out / "leaderboard.md").read_text()


# ---------------------------------------------------------------------------------- Ballester et al. 2022: lpips etc.


def test_lpips_loss_with_imagenet_backbone_missing_offline_is_exit_2(torch_home, tiny_run, capsys, no_training):
    """An lpips/perceptual loss asking for the ImageNet VGG-16 (through lpips_backbone or the cell's own
    loss_params.backbone) without the checkpoint offline: one line naming the file and TORCH_HOME, exit 2."""
    _, argv = tiny_run
    ckpt = str(torch_home / "hub" / "checkpoints" / "vgg16-397923af.pth")
    rc, _, err = run(argv + ["--grid", "ballester22", "--set", "lpips_backbone=imagenet"], capsys)
    assert_usage_error(rc, err, "loss lpips", ckpt, "TORCH_HOME")
    rc, _, err = run(argv + ["--grid", "ballester22", "--set", 'loss_params={"backbone": "imagenet"}'], capsys)
    assert_usage_error(rc, err, "loss lpips", ckpt, "TORCH_HOME")
    rc, _, err = run(argv + ["--set", "lpips_backbone=alexnet"], capsys)
    assert_usage_error(rc, err, "lpips_backbone")


def test_lpips_metric_without_its_backbone_says_missing(torch_home, tiny_run, capsys):
    """Only the metric wants the ImageNet VGG-16 (no loss does): the run goes on, warns once, and every row says
    lpips_backbone=missing with an empty lpips — never a number from a substitute network."""
    import bench.metrics.compute

    bench.metrics.compute._LPIPS.clear()  # the per-process cache may hold a network built with another TORCH_HOME
    out, argv = tiny_run
    try:
        rc, _, err = run(argv + ["--set", "lpips_backbone=imagenet"], capsys)
    finally:
        bench.metrics.compute._LPIPS.clear()
    assert rc == 0, err
    assert sum("lpips metric" in line and "missing" in line for line in err.splitlines()) == 1
    runs = rows(out / "runs.csv")
    assert len(runs) == 5 and all(r["status"] == "ok" for r in runs)  # 2 cells, grey, the mean colour, the oracle
    for r in runs:
        assert r["lpips_backbone"] == "missing"
        assert r["lpips"] in ("", "nan")
        assert float(r["delta_e2000"]) > 0
    assert all(p["lpips"] in ("", "nan") for p in rows(out / "per_image.csv"))


def test_ballester22_grid_quick_every_cell_ok_with_lpips_and_delta_e2000(tmp_path, data_root, capsys):
    """The ballester22 grid under the quick preset (random LPIPS VGG-16, flagged): every cell trains, and runs.csv,
    per_image.csv and leaderboard.csv carry lpips and delta_e2000 (run value = mean of its per-image values)."""
    out = tmp_path / "b22"
    argv = ["--grid", "ballester22", "--seeds", "1", "--data", "cbsd68", "--data-root", str(data_root),
            "--out", str(out), *TINY]
    rc, _, err = run(argv, capsys)
    assert rc == 0, err
    cells = [c.name for c in grids.get("ballester22").cells]
    assert {"l1", "mse", "lpips", "mse+wgan_gp", "kl", "huber", "l1_rgb", "mse_rgb"} <= set(cells)
    runs = rows(out / "runs.csv")
    assert sorted(r["cell"] for r in runs) == sorted(cells + ["grey", "mean_colour", "oracle_tint"])
    per_image = rows(out / "per_image.csv")
    for r in runs:
        assert r["status"] == "ok", r
        assert r["lpips_backbone"] == "random"
        for m in ("lpips", "delta_e2000"):
            mine = [float(p[m]) for p in per_image if (p["cell"], p["seed"]) == (r["cell"], r["seed"])]
            assert len(mine) == 6 and all(v > 0 for v in mine)
            assert float(r[m]) == pytest.approx(np.mean(mine), rel=1e-6)
    assert json.loads([r for r in runs if r["cell"] == "mse_rgb"][0]["loss_params"]) == {"space": "rgb"}
    board = rows(out / "leaderboard.csv")
    assert sorted(r["cell"] for r in board) == sorted(cells + ["grey", "mean_colour", "oracle_tint"])
    assert {"lpips_mean", "delta_e2000_mean"} <= set(board[0])
    assert {r["lpips_backbone"] for r in board} == {"random"}
    assert "ΔE2000" in (out / "leaderboard.md").read_text()

    # --rank-by a lower-is-better metric: the same runs (nothing trained again), ranked by ascending ΔE2000
    rc, _, err = run(argv + ["--rank-by", "delta_e2000"], capsys)
    assert rc == 0, err
    assert len(rows(out / "runs.csv")) == len(runs)
    board = [r for r in rows(out / "leaderboard.csv") if r["group"] == rows(out / "leaderboard.csv")[0]["group"]]
    scores = [float(r["score"]) for r in board]
    assert scores == sorted(scores)
    assert [float(r["delta_e2000_mean"]) for r in board] == pytest.approx(scores)
    rc, _, err = run(argv + ["--rank-by", "nope"], capsys)
    assert_usage_error(rc, err, "--rank-by", "lpips", "delta_e2000")
