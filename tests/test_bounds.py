"""Issue 31, B8/B24 and item 4: every numeric input that could hang a command or exhaust memory has an upper bound,
named in a one-line error (exit code 2) given before anything is written; ``--dry-run`` included."""
from __future__ import annotations

import time

import pytest

from bench import tune
from bench.cli import MAX_FOLDS, MAX_HEARTBEAT, MAX_SEEDS, MAX_TRIALS
from bench.config.cell import MAX_BATCH_SIZE, MAX_CROP, MAX_SEED, MAX_STEPS

import helpers

CASES = {
    "B24 seeds, dry run": (["--seeds", "1000000000", "--dry-run"], ["--seeds", str(MAX_SEEDS)]),
    "B24 heartbeat": (["--heartbeat", "1000000000"], ["--heartbeat", str(MAX_HEARTBEAT)]),
    "folds": (["--folds", "1000000000"], ["--folds", str(MAX_FOLDS)]),
    "B8 batch size in --set": (["--set", "batch_size=1000000000"], ["batch_size", str(MAX_BATCH_SIZE)]),
    "batch size option, dry run": (["--batch-size", "1000000000", "--dry-run"], ["batch_size", str(MAX_BATCH_SIZE)]),
    "steps": (["--steps", "100000000000"], ["steps", str(MAX_STEPS)]),
    "size": (["--size", "100000", "--crop", "64"], ["size", str(MAX_CROP)]),
    "seed": (["--set", "seed=-1"], ["seed", str(MAX_SEED)]),
    "crop seed": (["--crop-seed", str(2**40)], ["crop_seed", str(MAX_SEED)]),
}


@pytest.mark.parametrize("argv,needles", CASES.values(), ids=list(CASES))
def test_a_number_past_its_bound_is_one_line_naming_the_bound(tmp_path, monkeypatch, capsys, argv, needles):
    monkeypatch.setenv("COLORBENCH_RESULTS", str(tmp_path / "results"))
    t0 = time.perf_counter()
    rc, _, err = helpers.run(["--grid", "tiny", "--device", "cpu", "--no-progress", "--out", tmp_path / "run", *argv],
                             capsys)
    helpers.one_error(rc, err, *needles)
    assert time.perf_counter() - t0 < 10  # refused at once: nothing spins
    assert not (tmp_path / "run").exists() and not (tmp_path / "results").exists()


def test_b8_a_yaml_cell_with_a_huge_batch_is_refused(tmp_path, capsys):
    path = tmp_path / "g.yaml"
    path.write_text("grids:\n  g:\n    cells:\n      big: {loss: mse, batch_size: 1000000000}\n")
    rc, _, err = helpers.run(["--config", path, "--grid", "g", "--out", tmp_path / "run"], capsys)
    helpers.one_error(rc, err, "cell big", "batch_size", str(MAX_BATCH_SIZE))
    assert not (tmp_path / "run").exists()


def test_tune_trials_and_heartbeat_are_bounded(tmp_path, capsys):
    for argv, needle in ((["--trials", str(10**12)], str(MAX_TRIALS)), (["--heartbeat", "99999999"], "--heartbeat")):
        rc = tune.main(["--loss", "mse", "--out", str(tmp_path / "t"), *argv])
        helpers.one_error(rc, capsys.readouterr().err, needle)
    assert not (tmp_path / "t").exists()


def test_a_dry_run_refuses_a_run_folder_it_could_not_write(capsys, monkeypatch):
    """Cosmetic case of issue 31: ``COLORBENCH_RESULTS=/proc/1`` used to print a run folder there, with rc 0."""
    monkeypatch.setenv("COLORBENCH_RESULTS", "/proc/1")
    rc, out, err = helpers.run(["--grid", "tiny", "--dry-run"], capsys)
    helpers.one_error(rc, err, "/proc/1")
    assert "dry run" not in out


OTHER_COMMANDS = {
    "tune --startup-trials": ("tune", ["--loss", "mse", "--startup-trials", str(10**12)], "--startup-trials"),
    "tune --warmup-steps": ("tune", ["--loss", "mse", "--warmup-steps", str(10**12)], "--warmup-steps"),
    "tune --seed": ("tune", ["--loss", "mse", "--seed", "-1"], "--seed"),
    "report --n-boot": ("report", ["some-folder", "--n-boot", str(10**12)], "--n-boot"),
    "throughput --n-images": ("throughput", ["--n-images", str(10**12)], "--n-images"),
    "throughput --repeats": ("throughput", ["--repeats", "0"], "--repeats"),
    "throughput --iters": ("throughput", ["--iters", str(10**12)], "--iters"),
    "throughput --fp32-batch": ("throughput", ["--fp32-batch", str(10**9)], "--fp32-batch"),
    "styletransfer --eval-images": ("styletransfer", ["--eval-images", str(10**12)], "--eval-images"),
}


@pytest.mark.parametrize("command,argv,needle", OTHER_COMMANDS.values(), ids=list(OTHER_COMMANDS))
def test_the_other_commands_bound_their_numbers_too(tmp_path, monkeypatch, capsys, command, argv, needle):
    import importlib

    from bench.core import limits

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLORBENCH_RESULTS", str(tmp_path / "results"))
    t0 = time.perf_counter()
    rc = importlib.import_module(f"bench.{command}").main(argv)
    err = capsys.readouterr().err
    bound = {"--startup-trials": limits.MAX_TRIALS, "--warmup-steps": limits.MAX_STEPS, "--seed": limits.MAX_SEED,
             "--n-boot": limits.MAX_BOOT, "--n-images": limits.MAX_IMAGES, "--repeats": limits.MAX_TIMINGS,
             "--iters": limits.MAX_TIMINGS, "--fp32-batch": limits.MAX_BATCH_SIZE,
             "--eval-images": limits.MAX_IMAGES}[needle]
    helpers.one_error(rc, err, needle, str(bound))
    assert time.perf_counter() - t0 < 10 and not (tmp_path / "results").exists()
