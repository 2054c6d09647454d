"""Plugins (``bench.core.plugins``): entry points of an installed distribution, ``--import MODULE|FILE.py`` and a config
file's ``plugins:`` add a loss without editing colorbench; a broken one is one line with exit code 2. Logging
(``bench.core.log``): ``-v``/``-q`` and the run folder's ``colorbench.log``.

The end-to-end tests run the real command line in a subprocess (a plugin registers into the process that imports
it), on the bundled Kodak24 with tiny settings (one seed, one fold, 3 steps of 32-px crops: a few seconds each).
"""
from __future__ import annotations

import csv
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest

from bench import cli
from bench.config import file as configfile
from bench.core import log
from bench.core import plugins
from bench.grid import workers as wk
from bench.metrics.table import METRICS, Metric, unregister_metric

TINY = ["--seeds", "1", "--folds", "1", "--set", "size=32", "--set", "crop=32", "--set", "eval_size=32",
        "--set", "batch_size=4", "--steps", "3", "--device", "cpu", "--no-progress"]

LOSS_SOURCE = '''
"""A plugin loss for the tests: {name} = 2 x MSE."""
from losses import register_loss
from losses.mse import MSELoss


@register_loss("{name}")
class TwiceMSE(MSELoss):
    def elementwise(self, pred, target):
        return 2 * super().elementwise(pred, target)
'''


def grid_file(path: Path, loss: str, plugins_line: str = "") -> Path:
    """A config file whose grid ``mine`` has one cell ``l2x`` training ``loss``."""
    path.write_text(f"{plugins_line}grids:\n  mine:\n    cells:\n      l2x: {{loss: {loss}}}\n", encoding="utf-8")
    return path


def colorbench(args, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    """``python -m bench.ablate ARGS`` (or another command: ARGS[0] = ``bench.<name>``) in a subprocess."""
    module = args[0] if str(args[0]).startswith("bench.") else "bench.ablate"
    rest = args[1:] if module == args[0] else args
    return subprocess.run([sys.executable, "-m", module, *map(str, rest)], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def trained_with(out: Path, loss: str) -> dict:
    """The one trained row of a finished run folder, checked to use ``loss``, and the leaderboard's cells."""
    runs = [r for r in rows(out / "runs.csv") if r["model"] != "(none)"]
    assert [r["loss"] for r in runs] == [loss]
    assert "l2x" in {r["cell"] for r in rows(out / "leaderboard.csv")}
    return runs[0]


# --------------------------------------------------------------------------------------- end to end, subprocess


@pytest.fixture
def installed_plugin(tmp_path_factory):
    """A distribution ``colorbench-test-plugin`` with a ``colorbench.losses`` entry point (loss ``plugin_l2x``),
    pip-installed offline into this interpreter's environment; uninstalled afterwards."""
    src = tmp_path_factory.mktemp("plugin-src")
    (src / "cb_test_plugin.py").write_text(LOSS_SOURCE.format(name="plugin_l2x"), encoding="utf-8")
    (src / "pyproject.toml").write_text(textwrap.dedent('''
        [build-system]
        requires = ["setuptools"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "colorbench-test-plugin"
        version = "0.3.1"

        [tool.setuptools]
        py-modules = ["cb_test_plugin"]

        [project.entry-points."colorbench.losses"]
        plugin_l2x = "cb_test_plugin"
    '''), encoding="utf-8")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    got = subprocess.run([*pip, "install", "--no-deps", "--no-build-isolation", "--no-index", str(src)],
                         capture_output=True, text=True, timeout=300)
    assert got.returncode == 0, got.stderr
    try:
        yield "plugin_l2x"
    finally:
        subprocess.run([*pip, "uninstall", "-y", "colorbench-test-plugin"], capture_output=True, timeout=300)


def test_an_installed_entry_point_adds_a_loss_that_a_grid_trains(installed_plugin, tmp_path):
    work = tmp_path / "work"
    work.mkdir()  # the plugin's source is elsewhere: only its entry point can find it
    cfg = grid_file(tmp_path / "grid.yaml", installed_plugin)
    got = colorbench(["--config", cfg, "--grid", "mine", "--out", tmp_path / "run", *TINY], work)
    assert got.returncode == 0, got.stderr
    row = trained_with(tmp_path / "run", installed_plugin)
    assert row["plugins"] == "colorbench-test-plugin==0.3.1"  # recorded with the result
    listed = subprocess.run([sys.executable, "-c", "import losses; print(losses.available())"], cwd=work,
                            capture_output=True, text=True, timeout=120)
    assert installed_plugin in listed.stdout, listed.stderr  # loaded lazily by the registry itself


def test_import_of_a_py_file_reaches_every_worker(tmp_path):
    (tmp_path / "l2x_file.py").write_text(LOSS_SOURCE.format(name="file_l2x"), encoding="utf-8")
    cfg = grid_file(tmp_path / "grid.yaml", "file_l2x")
    # a relative path, two workers (each re-runs the command line): an unknown loss would fail them
    got = colorbench(["--import", "l2x_file.py", "--config", cfg, "--grid", "mine", "--seeds", "2", "--workers", "2",
                      "--out", tmp_path / "run", *TINY[2:]], tmp_path)
    assert got.returncode == 0, got.stderr
    runs = [r for r in rows(tmp_path / "run" / "runs.csv") if r["model"] != "(none)"]
    assert sorted(r["seed"] for r in runs) == ["0", "1"] and {r["loss"] for r in runs} == {"file_l2x"}
    digest = plugins.sha256_of(tmp_path / "l2x_file.py")
    assert {r["plugins"] for r in runs} == {f"{(tmp_path / 'l2x_file.py').resolve()}@sha256:{digest}"}
    text = (tmp_path / "run" / log.LOG_FILE).read_text(encoding="utf-8")
    pids = {line.split(" pid ")[1].split()[0] for line in text.splitlines() if " pid " in line}
    assert len(pids) >= 3, text  # the launcher and both workers appended to the one log file


def test_plugins_key_of_a_config_file(tmp_path):
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "l2x_conf.py").write_text(LOSS_SOURCE.format(name="conf_l2x"), encoding="utf-8")
    cfg = grid_file(tmp_path / "conf" / "grid.yaml", "conf_l2x", "plugins: [l2x_conf.py]\n")  # relative to the file
    got = colorbench(["--config", cfg, "--grid", "mine", "--out", tmp_path / "run", *TINY], tmp_path)
    assert got.returncode == 0, got.stderr
    trained_with(tmp_path / "run", "conf_l2x")


@pytest.mark.parametrize("how", ["import", "config"])
def test_a_broken_plugin_is_one_line_and_exit_2_before_anything_exists(tmp_path, how):
    (tmp_path / "broken_plugin.py").write_text("raise RuntimeError('this plugin is broken')\n", encoding="utf-8")
    cfg = grid_file(tmp_path / "grid.yaml", "mse", "plugins: [broken_plugin.py]\n" if how == "config" else "")
    extra = ["--import", "broken_plugin.py"] if how == "import" else []
    got = colorbench([*extra, "--config", cfg, "--grid", "mine", "--out", tmp_path / "run", *TINY], tmp_path)
    assert got.returncode == 2, got.stderr
    assert "Traceback" not in got.stderr
    lines = got.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), got.stderr
    assert "broken_plugin.py" in lines[0] and "RuntimeError: this plugin is broken" in lines[0]
    assert not (tmp_path / "run").exists()


def test_a_missing_module_is_one_line(tmp_path):
    got = colorbench(["bench.evaluate", "--import", "no_such_plugin_module", str(tmp_path)], tmp_path, timeout=120)
    assert got.returncode == 2 and "Traceback" not in got.stderr
    assert got.stderr.strip() == ("error: plugin no_such_plugin_module (--import or plugins:) failed to load: "
                                  "ModuleNotFoundError: No module named 'no_such_plugin_module'")


# --------------------------------------------------------------------------------------------- in process


@pytest.fixture
def fresh_plugins(monkeypatch):
    """bench.core.plugins with nothing loaded, restored afterwards."""
    monkeypatch.setattr(plugins, "_loaded_groups", set())
    monkeypatch.setattr(plugins, "_loaded", {})


def fake_entry_points(monkeypatch, group: str, load):
    ep = SimpleNamespace(name="toy", value="toy_pkg:thing", group=group, dist=None, load=load)
    monkeypatch.setattr(plugins.metadata, "entry_points",
                        lambda group=None: [ep] if group == ep.group else [])


def test_a_metric_entry_point_is_loaded_when_the_table_is_first_read(fresh_plugins, monkeypatch):
    calls = []

    def load():
        calls.append(1)
        from bench.metrics.table import register_metric

        register_metric(Metric("toy_metric", False, "", "toy"))

    fake_entry_points(monkeypatch, "colorbench.metrics", load)
    try:
        assert "toy_metric" in METRICS and "toy_metric" in list(METRICS)
        assert calls == [1]  # once
        assert cli.rank_by_metric("toy_metric") == "toy_metric"
        assert plugins.describe() == "toy_pkg"
    finally:
        unregister_metric("toy_metric")


def test_a_broken_entry_point_names_itself(fresh_plugins, monkeypatch):
    def load():
        raise ImportError("cannot import name 'x'\nmore lines")

    fake_entry_points(monkeypatch, "colorbench.models", load)
    with pytest.raises(plugins.PluginError) as caught:
        plugins.load_group("colorbench.models")
    assert str(caught.value) == ("plugin entry point toy = toy_pkg:thing (group colorbench.models) failed to load: "
                                 "ImportError: cannot import name 'x'")


@pytest.mark.parametrize("value", ["[1, 2]", "my_plugin", "{a: b}", "['']"])
def test_plugins_key_must_be_a_list_of_names(tmp_path, value):
    path = tmp_path / "c.yaml"
    path.write_text(f"plugins: {value}\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"c\.yaml: plugins: expected a list of module names"):
        configfile.load(path)


def test_workers_keep_import_and_config_and_drop_quiet():
    argv = ["--import", "a.py", "-q", "--config", "c.yaml", "--workers", "2", "-v"]
    assert wk.worker_argv(argv) == ["--import", "a.py", "--config", "c.yaml", "-v", "--no-progress"]


@pytest.fixture
def quiet_restored():
    yield
    log.set_verbosity(0)
    log.detach_run_log()


def test_verbosity_decides_what_stderr_shows(capsys, quiet_restored):
    logger = log.get_logger("bench.something")
    assert logger.name == "colorbench.something"
    for verbosity, shown in ((0, ["note", "warning: careful"]), (-1, ["warning: careful"]),
                             (1, ["debug: detail", "note", "warning: careful"])):
        log.set_verbosity(verbosity)
        logger.debug("detail")
        logger.info("note")
        logger.warning("careful")
        assert capsys.readouterr().err.splitlines() == shown


def test_v_and_q_are_shared_options_of_every_command(fresh_plugins):
    p = cli.parser("ablate", "doc")
    assert p.parse_args(["-q"]).verbosity == -1 and p.parse_args([]).verbosity == 0
    assert p.parse_args(["--import", "json", "--import", "string", "-v"]).imports == ["json", "string"]
    with pytest.raises(cli.UsageError, match="not allowed with"):
        p.parse_args(["-v", "-q"])
    log.set_verbosity(0)


def test_the_run_log_has_time_pid_and_debugging_notes(tmp_path, capsys, quiet_restored):
    logger = log.get_logger("bench.test_plugins")
    log.set_verbosity(-1)
    path = log.attach_run_log(tmp_path)
    logger.debug("a debugging note")
    assert log.attach_run_log(tmp_path) == path  # once
    log.detach_run_log()
    text = path.read_text(encoding="utf-8")
    assert f"pid {os.getpid()} DEBUG colorbench.test_plugins: a debugging note" in text
    assert capsys.readouterr().err == ""
    handlers = logging.getLogger("colorbench").handlers
    assert not any(isinstance(h, logging.FileHandler) for h in handlers)
