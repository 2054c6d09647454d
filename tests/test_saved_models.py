"""Trained models as results: weights saved with their configuration, re-scored in a fresh process
(``python -m bench.evaluate``), applied to photos at their own resolution (``python -m bench.colorize``), and
per-image rows keyed by the image's path relative to its data root.

One tiny grid is trained once for the module (smoke grid, 1 seed, 2 steps, 32-px images) on the bundled Kodak24
with a separate test folder that holds two different photos both named ``x.png`` in different subfolders.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from bench import ablate, colorize, evaluate
from bench.core.records import read_rows
from bench.reporting.leaderboard import build, load_per_image, load_runs
from bench.reporting.testsets import cross_set
from bench.training.checkpoint import load_weights, saved_models

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--set", "size=32", "--set", "crop=32", "--set", "eval_size=32", "--set", "batch_size=4", "--steps", "2",
        "--set", "val_every=1", "--device", "cpu", "--no-progress", "--grid", "smoke", "--seeds", "1"]


def cli(module, argv, capsys) -> tuple[int, str]:
    """Run a command's ``main`` in this process; returns (exit code, stderr)."""
    rc = module.main([str(a) for a in argv])
    return rc, capsys.readouterr().err


def python(*args, timeout=300) -> subprocess.CompletedProcess:
    """Run ``python -m ...`` in a fresh process (one thread: the machine is shared)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def test_folder(tmp_path_factory, data_root) -> Path:
    """Five cbsd68 photos as a test set: ``a/x.png`` and ``b/x.png`` are different photos with the same name."""
    folder = tmp_path_factory.mktemp("testset")
    photos = sorted((data_root / "cbsd68").glob("*.png"))[:5]
    for src, dst in zip(photos, ["a/x.png", "b/x.png", "c.png", "d/e/f.png", "g.png"]):
        (folder / dst).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, folder / dst)
    return folder


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, test_folder) -> Path:
    out = tmp_path_factory.mktemp("run") / "R"
    assert ablate.main([*TINY, "--test", str(test_folder), "--out", str(out)]) == 0
    return out


def test_weights_and_configuration_saved_for_every_run(run_dir):
    saved = saved_models(run_dir)
    assert [(s.model, s.cell, s.seed) for s in saved] == [("unet_vgg16", "kl", 0), ("unet_vgg16", "mse", 0)]
    runs = {r["cell"]: r for r in read_rows(run_dir / "runs.csv")}
    for s in saved:
        info = json.loads((s.folder / "config.json").read_text())
        assert info["config"]["loss"] == s.cell and info["config"]["size"] == 32
        assert info["psnr"] == float(runs[s.cell]["psnr"])
        assert not (s.folder / "checkpoint.pt").exists()  # a finished run keeps its final weights only
        net, cfg, _ = load_weights(s.folder)
        assert cfg.loss == s.cell and not net.training
        # the weights are those of a trained network: they differ from a fresh initialisation
        from bench.training.checkpoint import build_model

        fresh = build_model(cfg).state_dict()
        assert any(not torch.equal(v, fresh[k]) for k, v in net.state_dict().items())


def test_weights_file_is_plain_tensors(run_dir):
    """safetensors: a header and raw tensors; nothing that could be unpickled."""
    from safetensors import safe_open

    s = saved_models(run_dir)[0]
    with safe_open(s.folder / "model.safetensors", framework="pt") as fh:
        keys = list(fh.keys())
    assert keys and all(isinstance(k, str) for k in keys)


def test_no_models_saved_with_save_models_none(tmp_path, test_folder):
    out = tmp_path / "R"
    assert ablate.main([*TINY, "--test", str(test_folder), "--out", str(out), "--save-models", "none"]) == 0
    assert saved_models(out) == [] and not (out / "models").exists()
    assert len(read_rows(out / "runs.csv")) == 5  # 2 cells, grey, the mean colour and the oracle tint


def test_same_named_images_in_subfolders_are_kept_apart(run_dir):
    keys = {"a/x.png", "b/x.png", "c.png", "d/e/f.png", "g.png"}
    rows = read_rows(run_dir / "per_image.csv")
    for cell in ("grey", "mse", "kl"):
        got = [r["image"] for r in rows if r["cell"] == cell]
        assert sorted(got) == sorted(keys), got
        assert all(r["test_set"] == "testset0" for r in rows)
    # the run's mean covers the same five images as its per-image rows
    runs = {r["cell"]: float(r["psnr"]) for r in read_rows(run_dir / "runs.csv")}
    for cell in ("mse", "kl"):
        per = [float(r["psnr"]) for r in rows if r["cell"] == cell]
        assert runs[cell] == pytest.approx(sum(per) / len(per), abs=1e-9)
    # ... and so do the paired statistics
    board, _ = build(load_runs(run_dir), load_per_image(run_dir), n_boot=200)
    assert set(board.loc[board["cell"] != "grey", "n_images"]) == {5}
    # sample files keep the subfolders too
    truth = run_dir / "samples" / "truth"
    assert {p.relative_to(truth).as_posix() for p in truth.rglob("*.png")} >= {"a/x.png", "b/x.png"}


def test_fresh_process_reproduces_recorded_psnr_exactly(run_dir, test_folder, capsys):
    res = python("-m", "bench.evaluate", run_dir, "--test", test_folder, "--no-progress")
    assert res.returncode == 0, res.stderr[-3000:]
    recorded = {(r["cell"], r["seed"]): float(r["psnr"]) for r in read_rows(run_dir / "runs.csv")}
    recorded_lpips = {(r["cell"], r["seed"]): float(r["lpips"]) for r in read_rows(run_dir / "runs.csv")}
    evaluated = read_rows(run_dir / "evaluations" / "testset0" / "runs.csv")
    assert {(r["cell"], r["seed"]) for r in evaluated} == set(recorded)
    for r in evaluated:
        assert float(r["psnr"]) == recorded[(r["cell"], r["seed"])], r["cell"]  # exact: same weights, same images
        assert float(r["lpips"]) == pytest.approx(recorded_lpips[(r["cell"], r["seed"])], abs=1e-6), r["cell"]
        assert r["lpips_backbone"] == "random"  # the quick preset's, flagged
        assert r["test_set"] == "testset0"
    per_image = read_rows(run_dir / "evaluations" / "testset0" / "per_image.csv")
    # 5 images × (2 models, grey, the mean colour, the oracle tint)
    assert len(per_image) == 5 * 5 and {r["test_set"] for r in per_image} == {"testset0"}
    # scoring again adds nothing
    rc, err = cli(evaluate, [run_dir, "--test", test_folder, "--no-progress"], capsys)
    assert rc == 0 and "2 saved models, 2 already scored" in err
    assert len(read_rows(run_dir / "evaluations" / "testset0" / "runs.csv")) == 5


def test_evaluate_on_another_named_set(run_dir, data_root, capsys):
    rc, err = cli(evaluate, [run_dir, "--test", "cbsd68", "--data-root", data_root, "--no-progress"], capsys)
    assert rc == 0, err
    rows = read_rows(run_dir / "evaluations" / "cbsd68" / "runs.csv")
    assert {r["cell"] for r in rows} == {"grey", "mean_colour", "oracle_tint", "mse", "kl"}
    assert all(r["test_set"] == "cbsd68" and r["n_test"] == "68" for r in rows)
    per_image = read_rows(run_dir / "evaluations" / "cbsd68" / "per_image.csv")
    assert len(per_image) == 5 * 68 and {r["test_set"] for r in per_image} == {"cbsd68"}
    # the leaderboard and the report have a table per test set and the cross-set summary
    from bench.report import write_report

    write_report(run_dir, n_boot=200)
    for doc in ("leaderboard.md", "report.md", "report.html"):
        text = (run_dir / doc).read_text()
        assert "Test set: cbsd68" in text and "Across test sets: rank agreement" in text, doc
        part = text.split("Test set: cbsd68")[1].split("Across test sets")[0]
        assert all(cell in part for cell in ("grey", "mean_colour", "mse", "kl")), doc


def test_cross_set_summary_ranks_and_spearman():
    cells = ["w", "x", "y", "z"]
    a = pd.DataFrame({"model": "m", "cell": cells, "rank": [1, 2, 3, 4], "score": [30.0, 29.0, 28.0, 27.0]})
    b = pd.DataFrame({"model": "m", "cell": cells, "rank": [3, 1, 2, 4], "score": [26.0, 27.0, 26.5, 24.0]})
    c = b.iloc[:3].copy()  # a set where cell z was not scored
    ranks, rho = cross_set({"A": a, "B": b, "C": c})
    assert list(ranks["cell"]) == cells and list(ranks["B rank"]) == [3, 1, 2, 4]
    assert ranks["C rank"].isna().tolist() == [False, False, False, True]
    # Spearman by the textbook formula for untied ranks: 1 - 6 Σd² / (n (n² - 1))
    d2 = sum((x - y) ** 2 for x, y in zip([1, 2, 3, 4], [3, 1, 2, 4]))
    ab = rho[(rho["set A"] == "A") & (rho["set B"] == "B")].iloc[0]
    assert ab["rho"] == pytest.approx(1 - 6 * d2 / (4 * 15)) and ab["n_cells"] == 4
    ac = rho[(rho["set A"] == "A") & (rho["set B"] == "C")].iloc[0]
    assert ac["n_cells"] == 3 and ac["rho"] == pytest.approx(1 - 6 * 6 / (3 * 8))
    bc = rho[(rho["set A"] == "B") & (rho["set B"] == "C")].iloc[0]
    assert bc["rho"] == pytest.approx(1.0)
    # exact p-values: 3 cells in the same order are 2 of the 3! orderings with |rho| = 1; for A-B, the orderings of
    # 4 untied ranks whose |rho| reaches the observed one, counted by brute force
    assert bc["p"] == pytest.approx(2 / 6)
    import itertools

    def rho_of(perm):
        return 1 - 6 * sum((i - p) ** 2 for i, p in zip([1, 2, 3, 4], perm)) / (4 * 15)

    observed = abs(rho_of([3, 1, 2, 4]))
    expected = sum(abs(rho_of(p)) >= observed - 1e-12 for p in itertools.permutations([1, 2, 3, 4])) / 24
    assert ab["p"] == pytest.approx(expected)


@pytest.mark.parametrize("argv, needle", [
    (["--test", "no-such-set"], "no-such-set"),
    (["--test", "cbsd68", "--data-root", "/nonexistent"], "cbsd68"),
])
def test_evaluate_bad_input_is_one_line_exit_2(run_dir, argv, needle, capsys):
    rc, err = cli(evaluate, [run_dir, *argv], capsys)
    assert rc == 2 and err.startswith("error:") and len(err.strip().splitlines()) == 1 and needle in err


def test_evaluate_refuses_run_without_models_and_training_images(tmp_path, run_dir, capsys):
    rc, err = cli(evaluate, [tmp_path, "--test", "kodak24"], capsys)
    assert rc == 2 and "no saved models" in err and len(err.strip().splitlines()) == 1
    # the bundled Kodak24 that this run trained on is not a test set for it
    rc, err = cli(evaluate, [run_dir, "--test", ROOT / "bench" / "assets" / "kodak24"], capsys)
    assert rc == 2 and "training or validation images" in err.strip().splitlines()[-1]


def test_colorize_folder_at_input_resolution(run_dir, test_folder, tmp_path, capsys):
    src = tmp_path / "in"
    shutil.copytree(test_folder, src)
    Image.open(src / "c.png").convert("L").resize((101, 77)).save(src / "d" / "small_grey.jpg")
    Image.open(src / "g.png").save(src / "g.jpg")  # same stem as g.png: both are kept
    (src / "broken.png").write_bytes(b"not an image")
    out = tmp_path / "out"
    rc, err = cli(colorize, ["--run", run_dir, "--cell", "mse", src, out], capsys)
    assert rc == 0, err
    assert "1 unreadable file(s) skipped" in err and "colorizing" in err  # the count, and a progress bar
    readable = [p for p in src.rglob("*") if p.is_file() and p.name != "broken.png"]
    written = sorted(out.rglob("*.png"))
    assert len(written) == len(readable) == 7
    for p in readable:
        rel = p.relative_to(src)
        target = out / (rel.with_suffix(".png") if rel.stem != "g" else Path(str(rel) + ".png"))
        with Image.open(p) as a, Image.open(target) as b:
            assert a.size == b.size and b.mode == "RGB"


def test_colorize_keeps_the_full_resolution_lightness(run_dir, test_folder, tmp_path, capsys):
    """Only ab is predicted: the output's L is the input's (up to 8-bit rounding), at full resolution."""
    from bench.data.colour import rgb_to_lab

    rc, err = cli(colorize, ["--run", run_dir, "--cell", "kl", "--no-progress", test_folder / "c.png", tmp_path / "o"],
                  capsys)
    assert rc == 0, err

    def lightness(path):
        import numpy as np

        arr = torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1)[None].float() / 255
        return rgb_to_lab(arr)[0, 0]

    diff = (lightness(tmp_path / "o" / "c.png") - lightness(test_folder / "c.png")).abs()
    # 8-bit rounding and gamut clipping of a few saturated pixels move L a little; a blurred L would move it by dB
    assert diff.mean() < 0.5 and diff.median() < 0.3


@pytest.mark.parametrize("argv, needle", [
    (["--cell", "nope"], "saved cells: kl, mse"),
    (["--cell", "mse", "--seed", "7"], "saved seeds: 0"),
])
def test_colorize_bad_choice_is_one_line_exit_2(run_dir, test_folder, tmp_path, argv, needle, capsys):
    rc, err = cli(colorize, ["--run", run_dir, *argv, test_folder, tmp_path / "o"], capsys)
    assert rc == 2 and err.startswith("error:") and len(err.strip().splitlines()) == 1 and needle in err
    assert not (tmp_path / "o").exists()


@pytest.fixture(scope="module")
def fold_run(tmp_path_factory) -> Path:
    """The smoke grid in 2-fold rotation of the bundled Kodak24: one network per (cell, seed, fold)."""
    out = tmp_path_factory.mktemp("folds") / "R"
    assert ablate.main([*TINY, "--folds", "2", "--out", str(out)]) == 0
    return out


def test_fold_runs_are_saved_scored_on_another_set_and_colorize(fold_run, test_folder, tmp_path, capsys):
    """Every fold's network is saved in its own folder; on another test set each scores every image, the rows say
    so, and a (cell, seed)'s score of an image is the mean over its folds' networks (5 images, not 2 × 5)."""
    saved = saved_models(fold_run)
    assert [(s.cell, s.seed, s.fold) for s in saved] == [("kl", 0, 0), ("kl", 0, 1), ("mse", 0, 0), ("mse", 0, 1)]
    assert all(s.folder.name == f"fold{s.fold}" for s in saved)
    rc, err = cli(evaluate, [fold_run, "--test", test_folder, "--no-progress"], capsys)
    assert rc == 0, err
    ev = fold_run / "evaluations" / "testset0"
    rows = read_rows(ev / "runs.csv")
    assert sorted((r["cell"], r["fold"]) for r in rows) == [("grey", ""), ("kl", "0"), ("kl", "1"),
                                                             ("mean_colour", ""), ("mse", "0"), ("mse", "1"),
                                                             ("oracle_tint", "")]
    per = read_rows(ev / "per_image.csv")
    assert len(per) == 5 + 5 + 5 + 4 * 5  # grey, the mean colour, the oracle tint, 4 fold networks
    combined = load_per_image(ev)
    mse = combined[combined["cell"] == "mse"]
    assert len(mse) == 5
    for img, got in zip(mse["image"], mse["psnr"]):
        folds = [float(r["psnr"]) for r in per if r["cell"] == "mse" and r["image"] == img]
        assert len(folds) == 2 and got == pytest.approx(sum(folds) / 2)
    runs = load_runs(ev)
    assert set(runs["n_test"].astype(int)) == {5}
    board, _ = build(runs, combined, n_boot=200)
    assert set(board.loc[board["cell"] != "grey", "n_images"]) == {5}
    # scoring again adds nothing
    rc, err = cli(evaluate, [fold_run, "--test", test_folder, "--no-progress"], capsys)
    assert rc == 0 and "4 saved models, 4 already scored" in err
    # the run's own Kodak24 images trained some fold's network: refused as a test set
    rc, err = cli(evaluate, [fold_run, "--test", ROOT / "bench" / "assets" / "kodak24"], capsys)
    assert rc == 2 and "training or validation images" in err
    # colorize: fold 0 by default, another with --fold, a fold that does not exist named
    rc, err = cli(colorize, ["--run", fold_run, "--cell", "mse", "--no-progress", test_folder / "c.png", tmp_path / "a"],
                  capsys)
    assert rc == 0 and "seed 0 fold 0" in err and (tmp_path / "a" / "c.png").is_file()
    rc, err = cli(colorize, ["--run", fold_run, "--cell", "mse", "--fold", "1", "--no-progress", test_folder / "c.png",
                             tmp_path / "b"], capsys)
    assert rc == 0 and "fold 1" in err
    rc, err = cli(colorize, ["--run", fold_run, "--cell", "mse", "--fold", "3", test_folder, tmp_path / "c"], capsys)
    assert rc == 2 and "saved folds: 0, 1" in err and len(err.strip().splitlines()) == 1


# ------------------------------------------------------------------------------------------- held-out sets cannot leak


def _kodak_copies(folder: Path, fmt: str, names=None) -> Path:
    """The bundled Kodak24 photos (384×256) upscaled to 768×512, saved as PNG or as JPEG (quality 85)."""
    folder.mkdir(parents=True, exist_ok=True)
    for src in sorted((ROOT / "bench" / "assets" / "kodak24").glob("*.png")):
        if names and src.stem not in names:
            continue
        with Image.open(src) as im:
            big = im.convert("RGB").resize((im.width * 2, im.height * 2), Image.BICUBIC)
        big.save(folder / f"{src.stem}.{'jpg' if fmt == 'jpeg' else 'png'}", **({"quality": 85} if fmt == "jpeg" else {}))
    return folder


@pytest.mark.parametrize("fmt", ["png", "jpeg"])
def test_evaluate_refuses_the_training_photos_at_another_size_and_encoding(fold_run, tmp_path, fmt, capsys):
    """The bundled Kodak24 at 768×512, as PNG and as JPEG (other bytes, other size): every photo trained or
    validated some fold's network, so the set is refused, in one line, and nothing is scored."""
    folder = _kodak_copies(tmp_path / fmt, fmt)
    rc, err = cli(evaluate, [fold_run, "--test", folder, "--no-progress"], capsys)
    assert rc == 2 and err.startswith("error:") and len(err.strip().splitlines()) == 1, err
    assert "24 test image(s) show training or validation images of this run" in err
    assert not (fold_run / "evaluations" / folder.name).exists()


def test_evaluate_refuses_a_single_leaked_photo_among_new_ones(run_dir, test_folder, tmp_path, capsys):
    """One training photo (JPEG, 768×512) hidden among held-out photos is enough to refuse the set."""
    meta = json.loads((run_dir / "run.json").read_text())
    train_photo = Path(meta["splits"]["train"][0])
    folder = tmp_path / "mixed"
    shutil.copytree(test_folder, folder)
    _kodak_copies(folder / "sub", "jpeg", names={train_photo.stem})
    rc, err = cli(evaluate, [run_dir, "--test", folder, "--no-progress"], capsys)
    assert rc == 2 and "1 test image(s) show training or validation images" in err and train_photo.stem in err


def test_evaluate_checks_the_listed_files_of_an_older_run_json_from_another_folder(fold_run, tmp_path, monkeypatch,
                                                                                  capsys):
    """A run.json without fingerprints (older runs) and with relative paths: the files are found relative to a folder
    above the run, wherever evaluate is started; when they have moved away, one line says the check was not made."""
    proj = tmp_path / "proj"
    shutil.copytree(ROOT / "bench" / "assets" / "kodak24", proj / "photos")
    run = proj / "results" / "R"
    shutil.copytree(fold_run, run, ignore=shutil.ignore_patterns("evaluations"))
    meta = json.loads((run / "run.json").read_text())
    meta.pop("fingerprints")
    for split in [meta["splits"], *meta["fold_splits"]]:
        for k in [k for k in ("train", "val", "test") if k in split]:
            split[k] = [f"photos/{Path(p).name}" for p in split[k]]
    (run / "run.json").write_text(json.dumps(meta))
    monkeypatch.chdir(tmp_path)  # neither the project folder nor colorbench's
    leaked = _kodak_copies(tmp_path / "big", "png")
    rc, err = cli(evaluate, [run, "--test", leaked, "--no-progress"], capsys)
    assert rc == 2 and "show training or validation images" in err and len(err.strip().splitlines()) == 1
    shutil.rmtree(proj / "photos")  # the training files moved away: the check cannot be made, and says so
    rc, err = cli(evaluate, [run, "--test", leaked, "--no-progress"], capsys)
    assert rc == 0
    said = [line for line in err.splitlines() if "cannot be found" in line]
    assert len(said) == 1 and "24 of 24 training/validation files listed in run.json" in said[0]


def test_evaluate_scores_both_baselines_with_the_runs_training_mean(run_dir, test_folder, capsys):
    rc, err = cli(evaluate, [run_dir, "--test", test_folder, "--no-progress"], capsys)
    assert rc == 0, err
    meta = json.loads((run_dir / "run.json").read_text())
    rows = {r["cell"]: r for r in read_rows(run_dir / "evaluations" / "testset0" / "runs.csv")}
    assert json.loads(rows["mean_colour"]["mean_ab"]) == meta["mean_ab"] and len(meta["mean_ab"]) == 1
    # the mean colour's PSNR is that of the constant recorded at training time, recomputed here independently
    from bench.data.colour import merge_lab, split_lab
    from bench.data.sources import ImageStore, list_images
    from bench.metrics.compute import psnr_per_image

    imgs = ImageStore(list_images(test_folder), 32).centre_crops(32)
    L, ab = split_lab(imgs)
    const = torch.tensor(meta["mean_ab"][0]).view(1, 2, 1, 1).expand_as(ab)
    expected = psnr_per_image(merge_lab(L, const), imgs.float() / 255).mean()
    assert float(rows["mean_colour"]["psnr"]) == pytest.approx(float(expected), abs=1e-4)
    md = (run_dir / "leaderboard.md").read_text()
    assert "mean_colour" in md.split("Test set: testset0")[1]


def test_cross_set_spearman_leaves_the_baselines_out_and_never_gives_p_zero(monkeypatch):
    n = 10  # above the exact limit: a Monte-Carlo permutation p
    cells = [f"c{i}" for i in range(n)] + ["grey", "mean_colour"]
    scores = [30.0 - i for i in range(n)] + [10.0, 11.0]
    a = pd.DataFrame({"model": ["m"] * n + ["(none)"] * 2, "cell": cells, "rank": list(range(1, n + 1)) + [None] * 2,
                      "score": scores})
    b = a.assign(score=[s - 1 for s in scores[:n]] + [40.0, 41.0])  # baselines far off on B: must not matter
    _, rho = cross_set({"A": a, "B": b})
    r = rho.iloc[0]
    assert r["n_cells"] == n and r["rho"] == pytest.approx(1.0)
    # |rho| = 1 for 2 of the 10! orderings: the permutation p is (hits + 1) / (N + 1), about 1 / 20,001, never 0
    assert 0 < r["p"] < 0.001
    from bench.reporting.testsets import spearman

    x, y = np.arange(8.0), np.array([1.0, 0, 3, 2, 5, 4, 7, 6])  # exact (8! orderings) vs Monte-Carlo agree
    exact = spearman(x, y)[1]
    monkeypatch.setattr("bench.reporting.testsets.EXACT_MAX", 4)
    mc = spearman(x, y, n_perm=50_000)[1]
    assert mc == pytest.approx(exact, abs=0.005)
