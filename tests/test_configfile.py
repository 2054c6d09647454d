"""Configuration files (``--config FILE.yaml``): a grid defined in a file runs end to end, the file's overrides sit
between the preset and the command line, and every malformed file is one line with exit code 2."""
from __future__ import annotations

import textwrap

import pytest
import torch

from bench import ablate, cli, tune
from bench.config import cell as config
from bench.config import file as configfile
from bench.core.records import read_rows

TINY = ["--set", "size=32", "--set", "crop=32", "--set", "eval_size=32", "--steps", "2", "--device", "cpu",
        "--no-progress"]

GRID_YAML = """\
set:
  batch_size: 4
  val_every: 1
grids:
  mine:
    description: a grid defined in a file
    cells:
      mse: {loss: mse}
      l1: {loss: l1}
"""


def write(tmp_path, text: str):
    path = tmp_path / "grid.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_yaml_grid_runs_end_to_end(tmp_path, capsys):
    cfg = write(tmp_path, GRID_YAML)
    out = tmp_path / "run"
    assert ablate.main(["--config", str(cfg), "--grid", "mine", "--seeds", "1", "--out", str(out), *TINY]) == 0
    rows = read_rows(out / "runs.csv")
    trained = {r["cell"]: r for r in rows if r["model"] != "(none)"}
    assert set(trained) == {"mse", "l1"}
    assert {r["loss"] for r in trained.values()} == {"mse", "l1"}
    assert all(r["status"] == "ok" and int(r["batch_size"]) == 4 and int(r["steps"]) == 2 for r in trained.values())
    assert "| l1 " in (out / "leaderboard.md").read_text()
    # the file's grid is listed beside the package's
    capsys.readouterr()
    assert ablate.main(["--config", str(cfg), "--list-grids"]) == 0
    listing = capsys.readouterr().out
    assert "mine: a grid defined in a file" in listing and "losses:" in listing


def _args(argv):
    p = cli.parser("test", None)
    cli.add_training_arguments(p)
    return p.parse_args(argv)


def test_overrides_apply_preset_then_file_then_options_then_set(tmp_path):
    cfg = write(tmp_path, """\
        preset: paper
        set:
          steps: 5
          lr: 0.001
          loss_params: {rebalance: true}
        """)
    cpu = torch.device("cpu")
    base, name = cli.config_from_args(_args(["--config", str(cfg)]), cpu)
    assert name == "paper" and base.steps == 5 and base.lr == 0.001 and base.width == 1.0
    base, name = cli.config_from_args(_args(["--config", str(cfg), "--preset", "quick", "--steps", "7",
                                             "--set", 'loss_params={"style_weight": 2}']), cpu)
    assert name == "quick" and base.steps == 7 and base.lr == 0.001
    assert base.loss_params == {"rebalance": True, "style_weight": 2}  # dicts merge key by key


def test_tune_reads_the_config_file(tmp_path):
    cfg = write(tmp_path, "set: {steps: 3, batch_size: 2}\n")
    args = tune.parse_args(["--config", str(cfg), "--loss", "l1", "--device", "cpu"])
    base, _ = tune.base_config(args, torch.device("cpu"))
    assert (base.steps, base.batch_size, base.loss) == (3, 2, "l1")


BAD = {
    "not yaml": ("grids: [unclosed\n", ["not valid YAML"]),
    "not a mapping": ("- a\n- b\n", ["top level", "mapping"]),
    "grids not a mapping": ("grids: [1, 2]\n", ["grids", "mapping"]),
    "unknown top key": ("gridz: {}\n", ["gridz", "allowed"]),
    "unknown grid key": ("grids: {g: {cellz: {a: {loss: mse}}}}\n", ["grids.g.cellz"]),
    "no cells": ("grids: {g: {description: x}}\n", ["grids.g.cells", "at least one cell"]),
    "unknown cell key": ("grids: {g: {cells: {a: {los: mse}}}}\n", ["grids.g.cells.a", "los"]),
    "cell not a mapping": ("grids: {g: {cells: {a: mse}}}\n", ["grids.g.cells.a", "mapping"]),
    "wrong type": pytest.param("set: {steps: many}\n", ["set", "steps"], marks=pytest.mark.skipif(
        not hasattr(config, "check_values"),
        reason="typed configuration values (bench.config.cell.check_values) not here")),
    "dict field not a dict": ("set: {loss_params: 3}\n", ["set", "loss_params"]),
    "unknown preset": ("preset: huge\n", ["preset", "huge", "quick"]),
    "shadows a package grid": ("grids: {losses: {cells: {a: {loss: mse}}}}\n", ["losses", "another name"]),
    "unknown loss in a cell": ("grids: {mine: {cells: {a: {loss: nope}}}}\n", ["cell a", "unknown loss 'nope'"]),
}


@pytest.mark.parametrize("text, needles", [v if isinstance(v, tuple) else v for v in BAD.values()], ids=list(BAD))
def test_bad_config_file_is_one_line_exit_2(text, needles, tmp_path, capsys):
    cfg = write(tmp_path, text)
    out = tmp_path / "run"
    rc = ablate.main(["--config", str(cfg), "--grid", "mine", "--seeds", "1", "--out", str(out), *TINY])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    for n in needles:
        assert n in lines[0], (n, lines[0])
    assert not out.exists()


def test_missing_config_file(tmp_path, capsys):
    assert ablate.main(["--config", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "run")]) == 2
    assert "nope.yaml" in capsys.readouterr().err


def test_loader_returns_cells_in_file_order(tmp_path):
    cf = configfile.load(write(tmp_path, GRID_YAML))
    assert [c.name for c in cf.grids["mine"].cells] == ["mse", "l1"]
    assert cf.grids["mine"].cells[0].changes == {"loss": "mse"}
    assert cf.changes == {"batch_size": 4, "val_every": 1}


def test_the_example_file_plans():
    root = __import__("pathlib").Path(__file__).resolve().parent.parent
    args = ablate.parse_args(["--config", str(root / "examples" / "grid.yaml"), "--grid", "pixel", "--seeds", "1",
                              "--folds", "1"])
    base, preset_name, jobs = ablate.plan(args, torch.device("cpu"))
    assert preset_name == "quick" and base.steps == 150
    assert [j.cell for j in jobs] == ["mse", "l1", "huber_0.05", "kl_rebal"]
    assert jobs[3].cfg.loss_params == {"rebalance": True}
