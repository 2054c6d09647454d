"""Issue 31, B22 and item 1: a damaged or foreign weights file (the VGG-16 of the torch hub cache, an encoder
weights file) is one line naming the file and what to do, with exit code 2, before any folder exists; it is never
loaded with ``weights_only=False`` and torch's advice to do so is not repeated."""
from __future__ import annotations

import pickle

import pytest
import torch

from bench import tune
from models.vgg import EncoderWeightsError, imagenet_checkpoint_path, read_weights

import helpers

TINY = ["--grid", "tiny", "--steps", "2", "--set", "size=32", "--set", "crop=32", "--set", "eval_size=32",
        "--device", "cpu", "--no-progress", "--seeds", "1"]


class Foreign:
    """A class of the test module: unpickling it needs code, which weights_only refuses."""


def write_bad(path, kind: str):
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "garbage":
        path.write_bytes(b"\x80\x04not a checkpoint at all" * 10)
    elif kind == "truncated":
        torch.save({"w": torch.zeros(64, 64)}, path)
        path.write_bytes(path.read_bytes()[:300])
    elif kind == "pickle of code":
        path.write_bytes(pickle.dumps(Foreign()))
    else:  # a list: loads, but is no state dict
        torch.save([torch.zeros(2)], path)
    return path


KINDS = ("garbage", "truncated", "pickle of code", "not a state dict")


@pytest.mark.parametrize("kind", KINDS)
def test_read_weights_names_the_file_and_what_to_do(tmp_path, kind):
    path = write_bad(tmp_path / "w.pth", kind)
    with pytest.raises(EncoderWeightsError) as err:
        read_weights(path, "delete it")
    msg = str(err.value)
    assert str(path) in msg and "delete it" in msg and "\n" not in msg and "weights_only" not in msg


@pytest.mark.parametrize("kind", KINDS)
def test_b22_a_damaged_vgg_in_the_hub_cache_is_one_line_before_any_folder(tmp_path, torch_home, capsys, kind):
    cached = write_bad(imagenet_checkpoint_path("vgg16"), kind)
    assert str(torch_home) in str(cached)
    out = tmp_path / "run"
    rc, _, err = helpers.run([*TINY, "--set", "lpips_backbone=imagenet", "--out", out], capsys)
    helpers.one_error(rc, err, str(cached), "fetched again")
    assert "weights_only" not in err and not out.exists()


def test_a_damaged_vgg_is_refused_for_an_lpips_loss_cell_too(tmp_path, torch_home, capsys):
    cached = write_bad(imagenet_checkpoint_path("vgg16"), "garbage")
    path = tmp_path / "g.yaml"
    path.write_text("grids:\n  g:\n    cells:\n      p: {loss: lpips, loss_params: {backbone: imagenet}}\n")
    rc, _, err = helpers.run([*TINY[2:], "--config", path, "--grid", "g", "--out", tmp_path / "run"], capsys)
    helpers.one_error(rc, err, str(cached), "delete it")
    assert not (tmp_path / "run").exists()


def test_tune_refuses_a_damaged_vgg_before_its_folder(tmp_path, torch_home, capsys):
    cached = write_bad(imagenet_checkpoint_path("vgg16"), "truncated")
    rc = tune.main(["--loss", "mse", "--trials", "1", "--set", "lpips_backbone=imagenet", "--out",
                    str(tmp_path / "t"), *TINY[2:-2]])
    helpers.one_error(rc, capsys.readouterr().err, str(cached))
    assert not (tmp_path / "t").exists()


def test_a_foreign_encoder_weights_file_is_one_line(tmp_path, capsys):
    bad = write_bad(tmp_path / "enc.pth", "pickle of code")
    rc, _, err = helpers.run([*TINY, "--encoder-weights", str(bad), "--set", "width=1.0", "--out", tmp_path / "run"],
                             capsys)
    helpers.one_error(rc, err, str(bad), "encoder_weights=none")
    assert "weights_only" not in err and not (tmp_path / "run").exists()


def test_damaged_shipped_lpips_weights_are_one_line_before_any_folder(tmp_path, monkeypatch, capsys):
    """The LPIPS linear weights shipped with colorbench, changed after installation: their SHA-256 no longer matches
    ``SHA256SUMS``, one line naming the file and what to do, exit 2, before any folder (every run scores LPIPS)."""
    import shutil

    import models.lpips as mlpips

    folder = tmp_path / "lpips"
    shutil.copytree(mlpips.LIN_WEIGHTS.parent, folder)
    data = bytearray((folder / "vgg.pth").read_bytes())
    data[200] ^= 0x01
    (folder / "vgg.pth").write_bytes(bytes(data))
    monkeypatch.setattr(mlpips, "LIN_WEIGHTS", folder / "vgg.pth")
    out = tmp_path / "run"
    rc, _, err = helpers.run([*TINY, "--out", out], capsys)
    helpers.one_error(rc, err, str(folder / "vgg.pth"), "SHA-256", "reinstall colorbench")
    assert "weights_only" not in err and not out.exists()
