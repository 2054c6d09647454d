"""The command-line layer shared by every program: one exit-code rule, the same options everywhere, and the
``colorbench`` dispatcher that finds the commands without importing them."""
from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from bench import cli

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = sorted(cli.commands())


def test_the_dispatcher_finds_every_command():
    assert {"ablate", "tune", "report", "throughput", "styletransfer", "evaluate", "colorize"} <= set(COMMANDS)
    assert "cli" not in COMMANDS and "engine" not in COMMANDS  # no main(): not a command


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_has_help_and_the_one_line_error_rule(name, capsys):
    main = importlib.import_module(f"bench.{name}").main
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    assert f"python -m bench.{name}" in capsys.readouterr().out
    assert main(["--no-such-option"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1, err  # unknown option or missing argument


@pytest.mark.parametrize("name", COMMANDS)
def test_shared_options_mean_the_same_everywhere(name):
    """An option named like a shared one is defined by ``cli.ARGUMENTS`` (same destination, same type)."""
    mod = importlib.import_module(f"bench.{name}")
    if not hasattr(mod, "parse_args"):
        pytest.skip(f"bench.{name} builds its parser inside main")
    parser_actions = {}
    orig = cli.ArgumentParser.parse_args

    def capture(self, args=None, namespace=None):
        parser_actions.update({s: a for a in self._actions for s in a.option_strings})
        raise SystemExit(0)

    try:
        cli.ArgumentParser.parse_args = capture
        with pytest.raises(SystemExit):
            mod.parse_args([])
    finally:
        cli.ArgumentParser.parse_args = orig
    for key, (flags, kw) in cli.ARGUMENTS.items():
        for flag in flags:
            if flag in parser_actions:
                action = parser_actions[flag]
                assert action.dest == key, (name, flag)
                assert action.type == kw.get("type"), (name, flag)


def test_bad_values_are_one_line_exit_2(capsys):
    from bench import ablate

    assert ablate.main(["--seeds", "many"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: argument --seeds") and len(err.splitlines()) == 1


def test_dispatcher(capsys):
    assert cli.main(["--help"]) == 0
    listing = capsys.readouterr().out
    assert all(f"  {name}" in listing for name in ("ablate", "tune", "report"))
    assert cli.main(["nope"]) == 2
    assert "unknown command 'nope'" in capsys.readouterr().err
    assert cli.main(["ablate", "--list-grids"]) == 0
    assert "losses:" in capsys.readouterr().out
    assert cli.prog("ablate") == "python -m bench.ablate"  # restored after the dispatched command


def test_python_m_bench_is_the_dispatcher():
    out = subprocess.run([sys.executable, "-m", "bench", "--help"], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and "ablate" in out.stdout and "throughput" in out.stdout


def test_usage_errors_convert_input_errors_only():
    with pytest.raises(cli.UsageError, match="bad value"):
        with cli.usage_errors():
            raise ValueError("bad value\nsecond line")
    with pytest.raises(ZeroDivisionError):  # a bug keeps its traceback
        with cli.usage_errors():
            1 / 0
    assert cli.run(lambda argv: (_ for _ in ()).throw(KeyboardInterrupt()), []) == 130


def test_models_help_lists_exactly_the_registered_models():
    """``--models``' help reads the names from the source (no torch import): the same list as the registry, and no
    word from a docstring that shows the decorator (``@register_model("name")``)."""
    from bench import cli
    import models

    listed = cli._models_help().split("available: ", 1)[1].rstrip(")").split(", ")
    assert listed == models.available()


@pytest.mark.parametrize("argv", [["--help"], ["ablate", "--list-grids"], ["--config-schema"]])
def test_a_reader_that_went_away_gets_no_traceback(argv):
    """``colorbench ... | head -1``: a broken pipe ends the command quietly with 141 (128 + SIGPIPE), no traceback."""
    proc = subprocess.Popen([sys.executable, "-m", "bench", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # gone before the command writes its first line: that write meets a broken pipe
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141 and "Traceback" not in err, err
