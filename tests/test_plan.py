"""The plan of a grid run (``bench.grid.plan``): the jobs are model × cell × seed × fold, their keys name them, and the
configuration hash that names a run folder ignores dict ordering and the number of seeds but follows every setting."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.config import grids
from bench.config.cell import preset
from bench.core.paths import RESULTS_ENV
from bench.grid.plan import Job, check_folder_names, config_differences, config_hash, default_run_dir, describe, \
    identity_differences, key_str, plan_jobs

ROOT = Path(__file__).resolve().parent.parent
TINY = grids.get("tiny")  # mse, l1, huber, mse_lr


def test_importing_the_plan_imports_no_torch_or_optuna():
    code = "import sys\nimport bench.grid.plan\nprint(sorted(m for m in ('torch', 'optuna') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_a_cell_with_a_seed_offset_trains_other_seeds():
    grid = grids.get("controls")
    jobs = plan_jobs(grid, preset("controls"), ["unet_vgg16"], seeds=3)
    seeds = {c: sorted(j.cfg.seed for j in jobs if j.cell == c) for c in ("mse", "mse_again")}
    assert seeds == {"mse": [0, 1, 2], "mse_again": [100, 101, 102]}  # the negative control: other networks
    assert len({j.key for j in jobs}) == len(jobs)


def test_the_controls_grid_brings_its_data_preset_and_seeds():
    from bench.ablate import parse_args

    args = parse_args(["--grid", "controls"])
    assert (args.data, args.preset, args.seeds) == ("controls", "controls", 3)
    args = parse_args(["--grid", "controls", "--seeds", "2", "--data", "kodak24"])  # the command line wins
    assert (args.data, args.preset, args.seeds) == ("kodak24", "controls", 2)
    assert parse_args(["--grid", "losses"]).seeds == 2 and parse_args([]).data is None


def test_jobs_are_model_by_cell_by_seed_by_fold():
    base = preset("quick")
    jobs = plan_jobs(TINY, base, ["unet_vgg16", "unet_vgg19"], seeds=2, folds=3)
    assert len(jobs) == 2 * 4 * 2 * 3
    assert [(j.model, j.cell, j.cfg.seed, j.fold) for j in jobs] == [
        (m, c.name, s, f) for m in ("unet_vgg16", "unet_vgg19") for c in TINY.cells for s in range(2) for f in range(3)]
    assert all(isinstance(j, Job) and j.cfg.model == j.model for j in jobs)
    assert {j.cfg.loss for j in jobs if j.cell == "l1"} == {"l1"}
    assert {j.cfg.lr for j in jobs if j.cell == "mse_lr"} == {2e-3}  # the cell's change
    assert {j.cfg.lr for j in jobs if j.cell == "mse"} == {base.lr}  # the preset's value
    assert len({j.key for j in jobs}) == len(jobs)
    # one split: no fold in the jobs or their keys
    one = plan_jobs(TINY, base, ["unet_vgg16"], seeds=1)
    assert [j.key for j in one] == [f"unet_vgg16/{c.name}/0" for c in TINY.cells]
    assert {j.fold for j in one} == {None}


def test_keys():
    assert key_str("unet_vgg16", "mse", 0) == "unet_vgg16/mse/0"
    assert key_str("unet_vgg16", "mse", "1", "") == "unet_vgg16/mse/1"  # a CSV row without folds
    assert key_str("unet_vgg16", "a/b", 1, 2) == "unet_vgg16/a/b/1/fold2"
    assert Job("m", "c", preset("quick").replace(seed=3), 0).key == "m/c/3/fold0"


@pytest.mark.parametrize("seeds, folds", [(0, 1), (1, 0)])
def test_bad_counts_are_refused(seeds, folds):
    with pytest.raises(ValueError, match="at least 1"):
        plan_jobs(TINY, preset("quick"), ["unet_vgg16"], seeds=seeds, folds=folds)


def test_cells_that_share_a_folder_are_refused():
    clash = grids.Grid("clash", "", (grids.Cell("a b", {"loss": "mse"}), grids.Cell("a_b", {"loss": "l1"})))
    with pytest.raises(ValueError, match="'a b' and 'a_b' have the same folder name 'a_b'"):
        check_folder_names(clash)
    check_folder_names(TINY)


def test_hash_is_stable_under_ordering_and_seeds_and_follows_the_configuration():
    base = preset("quick")
    jobs = plan_jobs(TINY, base, ["unet_vgg16"], seeds=2)
    h = config_hash(jobs, None, None, None)
    assert len(h) == 8 and int(h, 16) >= 0
    assert config_hash(list(reversed(jobs)), None, None, None) == h  # job order
    assert config_hash(plan_jobs(TINY, base, ["unet_vgg16"], seeds=3), None, None, None) == h  # one more seed
    # dict ordering: the same parameters given in another order
    a = grids.Grid("g", "", (grids.Cell("c", {"loss": "kl", "loss_params": {"rebalance": True, "sigma": 4.0}}),))
    b = grids.Grid("g", "", (grids.Cell("c", {"loss_params": {"sigma": 4.0, "rebalance": True}, "loss": "kl"}),))
    ha = config_hash(plan_jobs(a, base, ["unet_vgg16"], 1), None, None, None)
    assert config_hash(plan_jobs(b, base, ["unet_vgg16"], 1), None, None, None) == ha
    # any change of the configuration or the data is another hash
    assert config_hash(plan_jobs(TINY, base.replace(steps=base.steps + 1), ["unet_vgg16"], 2), None, None, None) != h
    assert config_hash(jobs, "kodak24", "cbsd68", None) != h


def test_the_hash_of_the_quick_tiny_plan_is_unchanged():
    """The hash names users' run folders: a change of it orphans them (pinned when the plan left bench.grid.engine)."""
    jobs = plan_jobs(TINY, preset("quick"), ["unet_vgg16"], seeds=2, folds=4)
    assert config_hash(jobs, None, None, None) == "91fd6077"


def test_default_run_dir(tmp_path, monkeypatch):
    monkeypatch.setenv(RESULTS_ENV, str(tmp_path))
    jobs = plan_jobs(TINY, preset("quick"), ["unet_vgg16"], seeds=1)
    assert default_run_dir("tiny", "quick", None, None, jobs) == \
        tmp_path / f"tiny-quick-kodak24-bundled-{config_hash(jobs, None, None, None)}"
    assert default_run_dir("tiny", "quick", None, None) == tmp_path / "tiny-quick-kodak24-bundled"


def test_differences():
    job = plan_jobs(TINY, preset("quick"), ["unet_vgg16"], seeds=1)[0]
    row = {"steps": str(job.cfg.steps + 5), "lr": str(job.cfg.lr), "seed": "7", "psnr": "20", "width": "",
           "data_test": "cbsd68"}
    diff = config_differences(row, job, {"data_test": "kodak24-bundled"})
    # the seed is the row's key, empty columns and columns that are not configuration are not compared
    assert diff == {"steps": (str(job.cfg.steps + 5), str(job.cfg.steps)), "data_test": ("cbsd68", "kodak24-bundled")}
    assert describe(diff) == f"data_test: cbsd68 → kodak24-bundled, steps: {job.cfg.steps + 5} → {job.cfg.steps}"
    old = {"base_config": {"steps": 2}, "cells": {"m/a": {"lr": 1}, "m/gone": {"lr": 1}}, "folds": 1,
           "data": {"0": {"train": {"x.png": "1", "y.png": "2"}, "val": {}, "test": {}}}}
    new = {"base_config": {"steps": 3}, "cells": {"m/a": {"lr": 2}, "m/new": {"lr": 5}}, "folds": 1,
           "data": {"0": {"train": {"x.png": "9", "z.png": "3"}, "val": {}, "test": {}}}}
    assert identity_differences(old, new) == [
        "another configuration (steps: 2 → 3)", "another configuration of m/a (lr: 1 → 2)",
        "other data (train: 1 image(s) added: z.png)", "other data (train: 1 image(s) removed: y.png)",
        "other data (train: 1 image(s) changed: x.png)"]
    assert identity_differences(old, {**old, "cells": {"m/other": {"lr": 3}}}) == []  # a grid may grow
