"""Hostile use of the commands around a run (issue 22): colorize never replaces an input and never leaves a
half-written PNG, bounded memory for huge photos; damaged, swapped or edited saved models; checkpoints of another
code version; read-only folders; storage passwords of any shape; YAML bombs, duplicate keys and non-UTF-8 files.

The command-line cases use one tiny smoke run (2 seeds, 2 steps, 32-px images) trained once for the module.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file, save_file

from bench import ablate, colorize, evaluate, report, throughput, tune
from bench.config import file as configfile
from bench.config.cell import preset
from bench.core.records import command_line, note_secrets, read_rows, redact
from bench.data.colour import merge_lab, split_lab
from bench.training.checkpoint import load_weights, save_checkpoint, saved_models
from bench.training.loop import prepare, train_cell
from helpers import one_error

TINY = ["--set", "size=32", "--set", "crop=32", "--set", "eval_size=32", "--set", "batch_size=4", "--steps", "2",
        "--device", "cpu", "--no-progress"]
PG_URL = os.environ.get("COLORBENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def call(module, argv, capsys) -> tuple[int, str, str]:
    """Run a command's ``main`` in this process; returns (exit code, stdout, stderr)."""
    rc = module.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(scope="module")
def finished(tmp_path_factory, data_root) -> Path:
    """A finished tiny smoke run with saved models of two cells and two seeds."""
    out = tmp_path_factory.mktemp("finished") / "run"
    assert ablate.main(["--grid", "smoke", "--seeds", "2", "--data", "cbsd68", "--data-root", str(data_root),
                        "--out", str(out), *TINY]) == 0
    return out


@pytest.fixture
def run_copy(finished, tmp_path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(finished, dst)
    return dst


def photos(folder: Path, names=("a.png", "b.jpg", "sub/c.png"), size=(48, 40)) -> dict[Path, bytes]:
    """Small photos (smooth colour gradients) in ``folder``; returns their bytes by path."""
    out = {}
    for i, name in enumerate(names):
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        y, x = np.mgrid[: size[1], : size[0]]
        rgb = np.stack([x * 5 + i * 20, y * 6, (x + y) * 3], axis=-1).clip(0, 255).astype(np.uint8)
        Image.fromarray(rgb).save(path)
        out[path] = path.read_bytes()
    return out


def unchanged(files: dict[Path, bytes]) -> bool:
    return all(p.read_bytes() == b for p, b in files.items())


# --------------------------------------------------------------------------------- colorize: inputs are never replaced


@pytest.mark.parametrize("where", ["same", "inside", "holding"])
def test_colorize_output_folder_overlapping_the_input_folder_is_refused(finished, tmp_path, capsys, where):
    inp = tmp_path / "photos"
    files = photos(inp)
    out = {"same": inp, "inside": inp / "colour", "holding": tmp_path}[where]
    before = sorted(p for p in tmp_path.rglob("*"))
    rc, _, err = call(colorize, ["--run", finished, "--cell", "mse", "--device", "cpu", inp, out], capsys)
    one_error(rc, err, "overlaps the input folder")
    assert unchanged(files) and sorted(p for p in tmp_path.rglob("*")) == before


def test_colorize_never_replaces_the_input_photo_or_a_file_it_did_not_write(finished, tmp_path, capsys):
    files = photos(tmp_path / "in", names=("a.png",))
    photo = next(iter(files))
    rc, _, err = call(colorize, ["--run", finished, "--cell", "mse", "--device", "cpu", photo, photo.parent], capsys)
    one_error(rc, err, "would replace the input photo")
    assert unchanged(files)
    # someone else's file where an output would go
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.png").write_bytes(b"my own notes")
    rc, _, err = call(colorize, ["--run", finished, "--cell", "mse", "--device", "cpu", photo, out], capsys)
    one_error(rc, err, "was not written by colorize")
    assert (out / "a.png").read_bytes() == b"my own notes"
    # a file that colorize wrote is replaced by a rerun
    (out / "a.png").unlink()
    for _ in range(2):
        rc, _, err = call(colorize, ["--run", finished, "--cell", "mse", "--device", "cpu", photo, out], capsys)
        assert rc == 0, err
    assert Image.open(out / "a.png").size == Image.open(photo).size


def test_colorize_refuses_two_inputs_with_one_output_name_before_writing(finished, tmp_path, capsys):
    inp = tmp_path / "in"
    photos(inp, names=("a.jpg", "a.png", "a.jpg.png"))  # a.jpg → a.jpg.png (collides with a.png) = a.jpg.png's own
    out = tmp_path / "out"
    rc, _, err = call(colorize, ["--run", finished, "--cell", "mse", "--device", "cpu", inp, out], capsys)
    one_error(rc, err, "would both be written as a.jpg.png")
    assert not out.exists()


@pytest.mark.parametrize("how", ["sigint", "sigterm"])
def test_colorize_interrupted_while_writing_leaves_no_half_written_png(finished, tmp_path, capsys, monkeypatch, how):
    """Ctrl-C (or SIGTERM) in the middle of writing the second PNG: exit 130, the first PNG complete, no second PNG
    and no temporary file."""
    inp, out = tmp_path / "in", tmp_path / "out"
    photos(inp, names=("a.png", "b.png", "c.png"))
    real_save, calls = Image.Image.save, []

    def save(self, fp, *args, **kwargs):
        calls.append(fp)
        if len(calls) == 2:
            if hasattr(fp, "write"):
                fp.write(b"\x89PNG\r\n\x1a\n half")
            else:
                Path(fp).write_bytes(b"\x89PNG\r\n\x1a\n half")
            if how == "sigint":
                raise KeyboardInterrupt
            # SIGTERM's default action would end pytest itself: colorize must have a handler of its own
            assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, None), "SIGTERM would kill mid-write"
            signal.raise_signal(signal.SIGTERM)
        return real_save(self, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", save)
    rc, _, err = call(colorize, ["--run", finished, "--cell", "mse", "--device", "cpu", "--no-progress", inp, out],
                      capsys)
    monkeypatch.undo()
    assert rc == 130, err
    assert sorted(p.name for p in out.rglob("*")) == ["a.png"]
    with Image.open(out / "a.png") as im:
        im.load()


def test_colorize_works_in_strips_with_the_result_of_the_whole_photo(finished, monkeypatch):
    """The full-resolution stage never sees more than ``STRIP_PIXELS`` pixels at once, and gives what the whole photo
    at once gives (bilinear upsampling of ab with F.interpolate, the photo's own L)."""
    net, cfg, _ = load_weights(saved_models(finished)[0].folder)
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (150, 97, 3), dtype=np.uint8)
    seen = []

    def spy(fn):
        def wrapped(x, *rest):
            seen.append(x[0].numel() // x.shape[1] if x.ndim == 4 else x.numel())
            return fn(x, *rest)
        return wrapped

    monkeypatch.setattr(colorize, "STRIP_PIXELS", 1000, raising=False)
    from bench.data import colour

    monkeypatch.setattr(colour, "split_lab", spy(split_lab))
    monkeypatch.setattr(colour, "merge_lab", spy(merge_lab))
    got = colorize.colorize_photo(net, rgb, cfg.size, "cpu")
    assert max(seen[1:]) <= 1000 and len(seen) > 10  # seen[0]: the small working-size copy
    # the reference: the whole photo at once
    h, w = rgb.shape[:2]
    wh, ww = colorize.working_size(h, w, cfg.size)
    small = np.array(Image.fromarray(rgb).resize((ww, wh), Image.BILINEAR))
    with torch.no_grad():
        ab = net.to_ab(net(split_lab(torch.from_numpy(small).permute(2, 0, 1)[None])[0])).float()
        ab = F.interpolate(ab, size=(h, w), mode="bilinear", align_corners=False)
        L, _ = split_lab(torch.from_numpy(rgb).permute(2, 0, 1)[None])
        ref = merge_lab(L, ab)[0].clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    diff = np.abs(got.astype(int) - ref.astype(int))
    assert diff.max() <= 1 and (diff == 0).mean() > 0.999


# --------------------------------------------------------------------------------------------- damaged saved models


def _damage(run: Path, kind: str) -> Path:
    """Damage the saved mse model of seed 0 in one way; returns its folder."""
    folder = run / "models" / "unet_vgg16" / "mse" / "seed0"
    weights, config = folder / "model.safetensors", folder / "config.json"
    if kind == "truncated weights":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif kind == "garbage weights":
        weights.write_bytes(os.urandom(50_000))
    elif kind == "weights of another cell":
        shutil.copy(run / "models" / "unet_vgg16" / "kl" / "seed0" / "model.safetensors", weights)
    elif kind == "weights of another seed":
        shutil.copy(folder.parent / "seed1" / "model.safetensors", weights)
    elif kind == "edited config.json":
        doc = json.loads(config.read_text())
        doc["config"]["size"] = 48
        config.write_text(json.dumps(doc))
    elif kind == "garbage config.json":
        config.write_bytes(b"\xff\xfe{not json")
    elif kind == "config.json without a key":
        doc = json.loads(config.read_text())
        del doc["config"]["loss"]
        config.write_text(json.dumps(doc))
    elif kind == "old weights without a tensor":  # another code version: no identity, a tensor missing
        tensors = load_file(weights)
        tensors.pop(sorted(tensors)[-1])
        save_file(tensors, weights, metadata={"format": "colorbench"})
    return folder


DAMAGE = ["truncated weights", "garbage weights", "weights of another cell", "weights of another seed",
          "edited config.json", "garbage config.json", "config.json without a key", "old weights without a tensor"]


@pytest.mark.parametrize("kind", DAMAGE)
def test_colorize_with_a_damaged_or_swapped_model_is_one_line(run_copy, tmp_path, capsys, kind):
    folder = _damage(run_copy, kind)
    inp = tmp_path / "in"
    photos(inp, names=("a.png",))
    rc, _, err = call(colorize, ["--run", run_copy, "--cell", "mse", "--seed", "0", "--device", "cpu", inp,
                                 tmp_path / "out"], capsys)
    one_error(rc, err, str(folder))
    assert not (tmp_path / "out" / "a.png").exists()


@pytest.mark.parametrize("kind", ["truncated weights", "weights of another seed", "garbage config.json"])
def test_evaluate_skips_a_damaged_or_swapped_model_by_name_and_scores_the_others(run_copy, tmp_path, capsys, kind):
    folder = _damage(run_copy, kind)
    inp = tmp_path / "in"
    photos(inp, names=("a.png", "b.png", "c.png"), size=(40, 40))
    rc, _, err = call(evaluate, [run_copy, "--test", inp, "--device", "cpu", "--no-progress"], capsys)
    one_error(rc, err, "could not be used", str(folder))
    assert f"warning: skipping {folder}" in err
    scored = {(r["cell"], r["seed"]) for r in read_rows(run_copy / "evaluations" / "in" / "runs.csv")}
    assert ("mse", "0") not in scored and {("kl", "0"), ("kl", "1"), ("mse", "1"), ("grey", "0")} <= scored


def test_weights_record_their_run_identity(finished):
    from safetensors import safe_open

    for s in saved_models(finished):
        with safe_open(s.folder / "model.safetensors", framework="pt") as fh:
            meta = fh.metadata()
        assert (meta["model"], meta["cell"], meta["seed"], meta["fold"]) == (s.model, s.cell, str(s.seed), "")
        assert len(meta["config_sha256"]) == 64


def test_resume_from_a_checkpoint_that_lacks_a_key_trains_from_step_0(tmp_path, capsys):
    """A checkpoint of another code version that passes the format and configuration checks but lacks a key: the run
    starts again from step 0 (the same result as without a checkpoint) instead of crashing on every retry."""
    cfg = preset("quick").replace(size=32, crop=32, eval_size=32, batch_size=4, steps=2, val_every=2,
                                  checkpoint_every=1)
    prep = prepare(cfg)
    fresh = train_cell(cfg, prep, torch.device("cpu"), progress=False)
    ckpt = tmp_path / "checkpoint.pt"
    save_checkpoint(ckpt, cfg, {"model": {}, "step": 1}, {"history": []})  # no criterion, optimizer, elapsed_s
    got = train_cell(cfg, prep, torch.device("cpu"), progress=False, checkpoint=ckpt)
    assert "cannot be restored" in capsys.readouterr().err
    assert got["metrics"]["psnr"] == fresh["metrics"]["psnr"]


# ------------------------------------------------------------------------------------------------ read-only folders


@pytest.fixture
def read_only():
    """``make(folder)``: mount ``folder`` read-only onto itself (needs root and mount; root ignores file modes)."""
    mounted = []
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("a read-only bind mount needs root")

    def make(folder: Path):
        folder.mkdir(parents=True, exist_ok=True)
        if subprocess.run(["mount", "--bind", str(folder), str(folder)], capture_output=True).returncode:
            pytest.skip("cannot bind-mount here")
        mounted.append(folder)
        if subprocess.run(["mount", "-o", "remount,bind,ro", str(folder)], capture_output=True).returncode:
            pytest.skip("cannot remount read-only here")
        return folder

    yield make
    for folder in reversed(mounted):
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def test_evaluate_on_a_read_only_run_folder_is_one_line(run_copy, tmp_path, capsys, read_only):
    inp = tmp_path / "in"
    photos(inp, names=("a.png", "b.png"), size=(40, 40))
    read_only(run_copy)
    rc, _, err = call(evaluate, [run_copy, "--test", inp, "--device", "cpu", "--no-progress"], capsys)
    one_error(rc, err, "Read-only file system", str(run_copy))


def test_colorize_into_a_read_only_folder_is_one_line(finished, tmp_path, capsys, read_only):
    inp = tmp_path / "in"
    photos(inp, names=("a.png",))
    out = read_only(tmp_path / "out")
    rc, _, err = call(colorize, ["--run", finished, "--cell", "mse", "--device", "cpu", inp, out / "sub"], capsys)
    one_error(rc, err, "Read-only file system", str(out / "sub"))


def test_throughput_checks_its_output_folder_before_measuring(tmp_path, capsys, read_only, monkeypatch):
    out = read_only(tmp_path / "out")

    def measure(*a, **k):
        raise AssertionError("measured before checking the output folder")

    monkeypatch.setattr(throughput, "measure", measure)
    rc, _, err = call(throughput, ["--device", "cpu", "--out", out, "--repeats", "1", "--iters", "1"], capsys)
    one_error(rc, err, "Read-only file system", str(out))


# --------------------------------------------------------------------------------------------------------- passwords

SECRET, PIECE = "s3cretPW", "Xq9zPiece"  # PIECE: the part after a blank or an unescaped "@"
NASTY = [
    f"postgresql+psycopg://postgres:{SECRET} {PIECE}@127.0.0.1:5432/test",       # a blank
    f"postgresql+psycopg://postgres:{SECRET}@{PIECE}@127.0.0.1:5432/test",       # an unescaped @
    f"postgresql://u:{SECRET}/{PIECE}#x@h/db",                                   # / and # in the password
    f"postgresql://u@h/db?sslmode=require&password={SECRET} {PIECE}",            # ?password= with a blank
    f"postgresql://u@h/db?PassWord={SECRET}%20{PIECE}",
    f"redis://:{SECRET}'{PIECE}@h:6379/0",                                       # a quote
    f'mysql+pymysql://root:{SECRET}"{PIECE}@db/optuna?charset=utf8',
    f"postgresql://u:{SECRET}\t{PIECE}@h/db",
]


@pytest.mark.parametrize("url", NASTY)
def test_redact_removes_a_password_of_any_characters(url):
    for text in (redact(url), redact(url, whole_argument=True), command_line("python -m bench.ablate", ["--storage", url]),
                 redact(json.dumps({"storage": url})), redact(f"--storage '{url}' --out x")):
        assert SECRET not in text and PIECE not in text, text
        assert "***" in text
    # a driver's message that quotes the part after an unescaped "@" as a host name, once the command line is known
    note_secrets(["--storage", url])
    assert PIECE not in redact(f'failed to resolve host "{PIECE}@127.0.0.1": Name or service not known')


@pytest.mark.postgres
def test_no_file_or_output_of_a_run_report_or_tune_holds_a_password_with_a_blank_or_an_at(tmp_path, capsys,
                                                                                          data_root):
    """PostgreSQL on 127.0.0.1 uses trust authentication: the password in the URL is accepted and ignored."""
    import optuna

    url = PG_URL.replace("postgres@", f"postgres:{SECRET} {PIECE}@", 1)
    bad = PG_URL.replace("postgres@", f"postgres:{SECRET}@{PIECE}@", 1)  # the host becomes "Xq9zPiece@127.0.0.1"
    names = [f"h22c-{uuid.uuid4().hex[:8]}" for _ in range(2)]
    out, tuned = tmp_path / "run", tmp_path / "tune"
    printed = []
    try:
        rc, o, e = call(ablate, ["--grid", "smoke", "--seeds", "1", "--data", "cbsd68", "--data-root", data_root,
                                 "--out", out, "--storage", url, "--study-name", names[0], *TINY], capsys)
        assert rc == 0, e
        printed += [o, e]
        assert report.main([str(out), "--n-boot", "50"]) == 0
        printed += list(capsys.readouterr())
        rc, o, e = call(tune, ["--loss", "mse", "--steps", "2", "--set", "batch_size=4", "--set", "val_every=2",
                               "--trials", "1", "--no-progress", "--out", tuned, "--storage", url, "--study-name",
                               names[1], "--device", "cpu"], capsys)
        assert rc == 0, e
        printed += [o, e]
        rc, o, e = call(ablate, ["--grid", "smoke", "--seeds", "1", "--data", "cbsd68", "--data-root", data_root,
                                 "--out", tmp_path / "bad", "--storage", bad, *TINY], capsys)
        one_error(rc, e)
        printed += [o, e]
    finally:
        for name in names:
            with contextlib.suppress(Exception):
                optuna.delete_study(study_name=name, storage=PG_URL)
    assert (out / "report.html").is_file() and (tuned / "best_params.json").is_file()
    files = [p for folder in (out, tuned) for p in folder.rglob("*") if p.is_file()]
    for p in files:
        data = p.read_bytes()
        assert SECRET.encode() not in data and PIECE.encode() not in data, p
    assert json.loads((tuned / "best_params.json").read_text())
    for text in printed:
        assert SECRET not in text and PIECE not in text, text


# ------------------------------------------------------------------------------------------------------ YAML files

LAUGHS = "set:\n  loss_params:\n    a0: &a0 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n" + "".join(
    f"    a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]\n" for i in range(1, 9))
YAML = {
    "nested anchors": (LAUGHS, "anchors and aliases are expanded"),
    "duplicate key": ("set:\n  steps: 3\n  steps: 5\n", "'steps' given twice"),
    "duplicate grid key": ("grids:\n  g: {cells: {a: {}}}\n  g: {cells: {b: {}}}\n", "'g' given twice"),
    "cells 1 and '1'": ("grids:\n  mine:\n    cells:\n      1: {loss: mse}\n      '1': {loss: l1}\n", "same name '1'"),
    "not UTF-8": ("set:\n  steps: 3  # caf\xe9\n".encode("latin-1"), "not UTF-8"),
    "too deep": ("set:\n  loss_params: " + "[" * 3000 + "]" * 3000 + "\n", "nested more than"),
    "recursive alias": ("set:\n  loss_params: &a {x: *a}\n", "refers to the value that holds it"),
    "too large": ("set:\n  steps: 3\n" + "# padding\n" * 120_000, "larger than"),
}


@pytest.mark.parametrize("case", list(YAML))
def test_bad_yaml_config_is_one_line_naming_the_file(case, tmp_path, capsys):
    text, needle = YAML[case]
    path = tmp_path / "grid.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())

    def too_slow(*_):
        raise TimeoutError("still reading the configuration file after 60 s")

    before = signal.signal(signal.SIGALRM, too_slow)
    signal.alarm(60)
    try:
        with pytest.raises(ValueError) as info:
            configfile.load(path)
        # and on the command line: one line, exit 2, before any data is read (the data folder does not exist)
        rc, _, err = call(ablate, ["--config", path, "--grid", "smoke", "--data", tmp_path / "nodata", "--out",
                                   tmp_path / "out", "--device", "cpu"], capsys)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, before)
    assert str(path) in str(info.value) and needle in str(info.value), info.value
    one_error(rc, err, str(path), needle)
    assert not (tmp_path / "out").exists()
