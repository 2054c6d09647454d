"""Command-line conventions and start-up checks: no option abbreviations, ``--version`` and the version in the
records, ``--help`` without heavy imports, ``ablate --dry-run``, one line for a shadowed package or a mismatched
torch/torchvision, a file lock that does not need ``fcntl``."""
from __future__ import annotations

import importlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench import cli
from bench.core import startup
from bench.core.records import colorbench_version, environment, locked, record_command

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = sorted(cli.commands())


def _python(code_or_args, cwd=None, env_extra=None, pythonpath=None):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([*(pythonpath or []), str(ROOT)]), **(env_extra or {})}
    args = ["-c", code_or_args] if isinstance(code_or_args, str) else code_or_args
    return subprocess.run([sys.executable, *args], cwd=cwd or ROOT, env=env, capture_output=True, text=True,
                          timeout=300)


def _one_line_error(proc, *words):
    err = proc.stderr.strip()
    assert proc.returncode == 2, (proc.returncode, err[-2000:])
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    for w in words:
        assert w in err, err


# ------------------------------------------------------------------------------------------------ abbreviations


def test_seed_is_not_taken_for_seeds(capsys):
    from bench import ablate

    assert ablate.main(["--seed", "3", "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: unrecognized arguments: --seed 3") and len(err.splitlines()) == 1


@pytest.mark.parametrize("name", COMMANDS)
def test_no_command_takes_an_abbreviated_option(name, capsys):
    main = importlib.import_module(f"bench.{name}").main
    assert main(["--versio"]) == 2  # a prefix of --version (which would exit 0), which every command has
    assert "--version" not in capsys.readouterr().out


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_has_version_and_colorbench_examples(name, capsys):
    main = importlib.import_module(f"bench.{name}").main
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.startswith(f"colorbench {colorbench_version()}")
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "python -m bench." not in capsys.readouterr().out.split("options:")[-1]  # examples say colorbench X


def test_listings_fit_100_columns(capsys):
    from bench import ablate

    assert cli.main(["--help"]) == 0 and ablate.main(["--list-grids"]) == 0
    out = capsys.readouterr().out
    assert "losses:" in out and max(map(len, out.splitlines())) <= cli.TERMINAL_WIDTH


# ------------------------------------------------------------------------------------------------ version


def test_version_is_the_packages_and_is_recorded():
    declared = re.search(r'^version\s*=\s*"([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.MULTILINE).group(1)
    assert colorbench_version() == declared
    out = _python(["-m", "bench", "--version"])
    assert out.returncode == 0 and out.stdout.startswith(f"colorbench {declared}"), out
    env = environment("cpu")
    assert env["colorbench"] == declared and "git_commit" in env


# ------------------------------------------------------------------------------------------------ help without torch


#: what a command imports only after its command line is parsed (seconds each on a loaded machine)
HEAVY = ("torch", "torchvision", "optuna", "pandas", "matplotlib", "scipy", "seaborn")


@pytest.mark.parametrize("argv", [["--help"], ["--version"], *([name, "--help"] for name in COMMANDS),
                                  ["ablate", "--list-grids"]], ids=" ".join)
def test_help_imports_no_heavy_module(argv):
    """``colorbench X --help`` imports ``bench.X`` and runs its parser, as ``python -m bench.X --help`` does."""
    code = (f"import sys\nfrom bench import cli\ntry:\n    cli.main({argv!r})\nexcept SystemExit:\n    pass\n"
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    out = _python(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout[-500:]


# ------------------------------------------------------------------------------------------------ dry run


def test_dry_run_lists_the_jobs_and_the_hash_and_creates_nothing(tmp_path, monkeypatch, capsys):
    from bench import ablate
    from bench.grid.plan import config_hash

    monkeypatch.setenv("COLORBENCH_RESULTS", str(tmp_path / "results"))
    monkeypatch.chdir(tmp_path)
    assert ablate.main(["--grid", "smoke", "--seeds", "2", "--folds", "3", "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    from bench.core.device import pick_device

    device = pick_device(None)
    _, _, jobs = ablate.plan(ablate.parse_args(["--grid", "smoke", "--seeds", "2", "--folds", "3"]), device)
    assert f"configuration hash {config_hash(jobs, None, None, None)}" in out[0]
    rows = [line.split() for line in out[2:]]
    assert out[1].split() == ["model", "cell", "seed", "fold"]
    assert sorted(map(tuple, rows)) == sorted((j.model, j.cell, str(j.cfg.seed), str(j.fold)) for j in jobs)
    assert len(rows) == 2 * 2 * 3  # cells × seeds × folds
    assert list(tmp_path.iterdir()) == []  # no results folder, no journal, nothing


# ------------------------------------------------------------------------------------------------ shadowing


@pytest.mark.parametrize("package", ["models", "losses"])
def test_another_projects_package_is_one_line(tmp_path, package):
    (tmp_path / package).mkdir()
    (tmp_path / package / "__init__.py").write_text("raise ImportError('the other project')\n")
    # python -m puts the current folder first on sys.path: the other project's package shadows colorbench's
    out = _python(["-m", "bench.ablate", "--help"], cwd=tmp_path)
    _one_line_error(out, f"`{package}` resolves to {tmp_path / package}", "colorbench")
    out = _python(["-m", "bench", "ablate", "--dry-run"], cwd=tmp_path)
    _one_line_error(out, f"`{package}`")


def test_no_shadowing_where_the_packages_are_colorbenchs():
    assert startup.shadowed() is None


# ------------------------------------------------------------------------------------------------ torch/torchvision


@pytest.mark.parametrize("torch_v, vision_v, bad", [
    ("2.14.1", "0.29.1", False), ("2.5.1+cpu", "0.20.1+cpu", False), ("2.1.0", "0.16.0", False),
    ("2.5.1+cpu", "0.21.0", True), ("2.13.0+cpu", "0.29.1", True), ("2.5.1+cpu", "0.20.1+cu124", True),
    ("2.14.1+cu130", "0.29.1+cu130", False), ("2.5.1", "0.20.1+cpu", False),
    ("2.13.0+cpu", "0.28.0", True)])  # the pair pip installed here: "operator torchvision::nms does not exist"
def test_torch_pair_rule(torch_v, vision_v, bad):
    problem = startup.torch_pair_problem(torch_v, vision_v, linux=True)
    assert (problem is not None) == bad
    if bad:
        assert torch_v in problem and vision_v in problem and "\n" not in problem
    assert startup.torch_pair_problem("2.13.0+cpu", "0.28.0", linux=False) is None  # elsewhere PyPI's is a CPU build


def test_a_mismatched_torchvision_is_one_line_at_start_up(tmp_path):
    """Simulated: a torchvision distribution of another release first on the path (what pip leaves behind after
    installing a CPU torch, then colorbench's requirements)."""
    import torch

    minor = int(torch.__version__.split(".")[1])
    dist = tmp_path / f"torchvision-0.{minor + 14}.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: torchvision\nVersion: 0.{minor + 14}.0\n")
    for argv in (["-m", "bench.ablate", "--help"], ["-m", "bench", "--version"]):
        out = _python(argv, pythonpath=[str(tmp_path)])
        _one_line_error(out, "torchvision", f"0.{minor + 14}.0", "do not match")


def test_the_operator_error_itself_becomes_one_line(capsys):
    def boom(argv):
        raise RuntimeError("operator torchvision::nms does not exist")

    assert cli.run(boom, []) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: torchvision cannot load its operators") and len(err.splitlines()) == 1
    with pytest.raises(RuntimeError, match="something else"):  # other runtime errors keep their traceback
        cli.run(lambda argv: (_ for _ in ()).throw(RuntimeError("something else")), [])


# ------------------------------------------------------------------------------------------------ lock, commands


def test_records_import_and_lock_without_fcntl(tmp_path):
    """Windows has no fcntl: the module still imports, and the lock falls back to msvcrt (simulated here)."""
    code = f"""
import subprocess, sys, types  # subprocess first: it takes an importable msvcrt for a sign of Windows
sys.modules['fcntl'] = None  # import fcntl now fails, as on Windows
calls = []
msvcrt = types.ModuleType('msvcrt')
msvcrt.LK_LOCK, msvcrt.LK_UNLCK = 1, 0
msvcrt.locking = lambda fd, mode, n: calls.append(mode)
sys.modules['msvcrt'] = msvcrt
from bench.core.records import locked
with locked({str(tmp_path / 'x')!r}):
    pass
print(calls)
"""
    out = _python(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[1, 0]"  # locked, then unlocked


def test_commands_are_recorded_once_in_order(tmp_path):
    record_command(tmp_path, "colorbench ablate --grid smoke")
    record_command(tmp_path, "colorbench evaluate RUN --test cbsd68")
    record_command(tmp_path, "colorbench ablate --grid smoke")
    assert (tmp_path / "commands.txt").read_text().splitlines() == ["colorbench ablate --grid smoke",
                                                                    "colorbench evaluate RUN --test cbsd68"]
    with locked(tmp_path / "y"):
        assert (tmp_path / "y.lock").exists()


def test_run_json_names_the_code(tmp_path):
    """A finished run records colorbench's version in every row and in run.json (tiny run, one cell)."""
    from bench import ablate
    from bench.core.records import read_rows

    out = tmp_path / "run"
    assert ablate.main(["--grid", "smoke", "--models", "unet_vgg16", "--seeds", "1", "--folds", "1", "--steps", "1",
                        "--set", "size=32", "--set", "crop=32", "--set", "eval_size=32", "--set", "batch_size=4",
                        "--out", str(out), "--no-progress"]) == 0
    rows = read_rows(out / "runs.csv")
    assert rows and all(r["colorbench"] == colorbench_version() for r in rows)
    meta = json.loads((out / "run.json").read_text())
    assert meta["environment"]["colorbench"] == colorbench_version()
    assert meta["jobs"] == ["unet_vgg16/mse/0", "unet_vgg16/kl/0"]
    assert (out / "commands.txt").read_text().startswith("python -m bench.ablate --grid smoke")
