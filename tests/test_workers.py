"""``colorbench ablate --workers N`` / ``--gpus``: the launcher's thread split and per-worker environment, its
handling of signals and failed workers (with stand-in worker processes, no torch), and one end-to-end run of two
workers on a tiny grid (issue 30, item 7)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest

from bench.core.records import read_rows
from bench.grid import workers as wk
from helpers import one_error, run

ROOT = Path(__file__).resolve().parent.parent
# tests/test_run_folder.py's TINY on the bundled Kodak24: 32-px crops, 2 steps of 4; 1-second heartbeats, so that a
# worker that has nothing left to claim sees the grid finished within a second
TINY = ["--set", "size=32", "--set", "crop=32", "--set", "eval_size=32", "--set", "batch_size=4", "--steps", "2",
        "--device", "cpu", "--no-progress", "--folds", "1", "--heartbeat", "1"]


@pytest.mark.parametrize("workers,cores,env,want", [
    (2, 2, {}, {"OMP_NUM_THREADS": "1"}),                                    # 2 × 1 on 2 cores
    (1, 2, {}, {"OMP_NUM_THREADS": "2"}),
    (4, 16, {}, {"OMP_NUM_THREADS": "4"}),
    (3, 16, {}, {"OMP_NUM_THREADS": "5"}),                                   # rounded down: 15 of 16 cores
    (3, 2, {}, {"OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}),      # more workers than cores
    (2, 2, {"OMP_NUM_THREADS": "1"}, {}),                                    # the user's threads are kept ...
    (2, 2, {"OMP_NUM_THREADS": "2"}, {"OMP_WAIT_POLICY": "PASSIVE"}),        # ... and 2 × 2 > 2 cores
    (3, 2, {"OMP_WAIT_POLICY": "ACTIVE"}, {"OMP_NUM_THREADS": "1"}),         # the user's policy is kept
    (2, 8, {"OMP_NUM_THREADS": ""}, {"OMP_NUM_THREADS": "4"}),               # empty or junk: not a setting
    (2, 8, {"OMP_NUM_THREADS": "many"}, {"OMP_NUM_THREADS": "4"}),
])
def test_thread_split(workers, cores, env, want):
    assert wk.thread_split(workers, cores, env) == want


def test_worker_environment_and_command_line():
    user = {"PATH": "/bin", "PYTHONPATH": "/elsewhere", "CUDA_VISIBLE_DEVICES": "0,1,2,3"}
    envs = [wk.worker_env(user, i, 2, 8, gpus=["2", "GPU-5f3e"], launcher_pid=4321) for i in range(2)]
    assert [e["CUDA_VISIBLE_DEVICES"] for e in envs] == ["2", "GPU-5f3e"]  # one GPU each, the user's replaced
    assert [e[wk.WORKER_ENV] for e in envs] == ["1/2 4321", "2/2 4321"]
    for e in envs:
        assert e["OMP_NUM_THREADS"] == "4" and "OMP_WAIT_POLICY" not in e and e["PATH"] == "/bin"
        assert e["PYTHONPATH"] == os.pathsep.join([str(ROOT), "/elsewhere"]) and e["PYTHONUNBUFFERED"] == "1"
    assert all(e[wk.SHARED_CACHE_ENV] == "1" for e in envs)  # the workers map the launcher's decoded set
    assert wk.worker_env({wk.SHARED_CACHE_ENV: ""}, 0, 2, 2)[wk.SHARED_CACHE_ENV] == ""  # the user's is kept
    from bench.data.sources import SHARED_CACHE_ENV

    assert wk.SHARED_CACHE_ENV == SHARED_CACHE_ENV
    plain = wk.worker_env({"OMP_NUM_THREADS": "3"}, 0, 4, 2)
    assert "CUDA_VISIBLE_DEVICES" not in plain and plain["OMP_NUM_THREADS"] == "3"
    assert plain["OMP_WAIT_POLICY"] == "PASSIVE" and plain["PYTHONPATH"] == str(ROOT)
    # the same command less the launcher's options; no bars in the logs; with --gpus, a GPU or an error
    argv = ["--grid", "tiny", "--workers", "2", "--out", "r", "--gpus=0,1"]
    assert wk.worker_argv(argv) == ["--grid", "tiny", "--out", "r", "--no-progress"]
    assert wk.worker_argv(argv, ["0", "1"])[-2:] == ["--device", "cuda"]
    assert wk.worker_argv([*argv, "--device", "cuda:0", "--no-progress"], ["0", "1"]).count("--device") == 1
    cmd = wk.worker_command(argv)
    assert cmd[0] == sys.executable and cmd[cmd.index("-m") + 1] == "bench.ablate"
    assert wk.worker_count(None, None) is None and wk.worker_count(3, None) == 3
    assert wk.worker_count(None, ["0", "1"]) == 2 and wk.worker_count(2, ["0", "1"]) == 2
    with pytest.raises(ValueError, match="disagree"):
        wk.worker_count(3, ["0", "1"])
    with pytest.raises(ValueError, match="cuda:0"):
        wk.check_gpu_device(["0", "1"], "cuda:1")
    wk.check_gpu_device(["0"], "cuda")


def test_inconsistent_or_impossible_worker_options_are_one_line_before_anything(tmp_path, capsys):
    out = tmp_path / "run"
    base = ["--grid", "tiny", "--seeds", "1", "--out", str(out), *TINY]
    one_error(*run([*base, "--workers", "3", "--gpus", "0,1"], capsys)[::2], "--workers 3", "--gpus 0,1")
    one_error(*run([*base, "--workers", "0"], capsys)[::2], "--workers")
    one_error(*run([*base, "--gpus", "0,,1"], capsys)[::2], "--gpus")
    one_error(*run([*base, "--gpus", "0,1"], capsys)[::2], "--device cpu")  # each worker sees its GPU as cuda:0
    assert not out.exists()


#: a stand-in worker (no torch): it notes its pid, follows its launcher, then sleeps; ``ignore`` ignores Ctrl-C
SLEEPER = textwrap.dedent("""
    import os, signal, sys, time
    from bench.grid import workers
    workers.follow_launcher()
    if sys.argv[2] == "ignore":
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    open(sys.argv[1], "w").write(str(os.getpid()))
    time.sleep(120)
""")
LAUNCHER = textwrap.dedent("""
    import os, sys
    from pathlib import Path
    from bench.grid import workers as wk
    folder, modes, code = Path(sys.argv[1]), sys.argv[2:], sys.stdin.read()
    cmds = [[sys.executable, "-c", code, str(folder / f"pid{i}"), m] for i, m in enumerate(modes)]
    envs = [wk.worker_env(os.environ, i, len(modes), 2) for i in range(len(modes))]
    started = wk.start(cmds, envs, [wk.log_path(folder, i + 1) for i in range(len(modes))])
    got = wk.wait(started, grace=1.0, poll=0.05)
    print(got, [w.returncode for w in started], flush=True)
""")


def _launcher(folder: Path, *modes: str) -> tuple[subprocess.Popen, list[int]]:
    """Start LAUNCHER with one SLEEPER per mode; returns it and the sleepers' pids once they all run."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", LAUNCHER, str(folder), *modes], cwd=ROOT, env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    proc.stdin.write(SLEEPER)
    proc.stdin.close()
    files, deadline = [folder / f"pid{i}" for i in range(len(modes))], time.monotonic() + 60
    while not all(f.is_file() and f.read_text() for f in files):
        assert time.monotonic() < deadline and proc.poll() is None, proc.stdout.read()
        time.sleep(0.05)
    return proc, [int(f.read_text()) for f in files]


def _gone(pid: int, within: float = 10.0) -> bool:
    """Whether process ``pid`` has ended (or is a zombie) within ``within`` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.05)
    return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc; PR_SET_PDEATHSIG is Linux's")
def test_signals_reach_every_worker_and_none_is_left_behind(tmp_path):
    # SIGTERM to the launcher: forwarded as Ctrl-C; the worker that ignores it is killed after the grace period
    (tmp_path / "a").mkdir()
    proc, pids = _launcher(tmp_path / "a", "plain", "ignore")
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)
    out = proc.stdout.read()
    # an uncaught KeyboardInterrupt ends Python with SIGINT (-2); the one that ignored it was killed (-9)
    assert proc.returncode == 0 and out.split("\n")[0].startswith(f"{int(signal.SIGTERM)} [-2, -9]"), out
    assert all(_gone(p, 1) for p in pids)
    assert "KeyboardInterrupt" in wk.log_path(tmp_path / "a", 1).read_text()  # it stopped as on Ctrl-C
    # the launcher killed outright (no handler runs): the workers stop with it
    (tmp_path / "b").mkdir()
    proc, pids = _launcher(tmp_path / "b", "plain", "plain")
    proc.kill()
    proc.wait(timeout=30)
    assert all(_gone(p) for p in pids), "a worker outlived its launcher"


def test_a_failed_worker_is_reported_with_its_exit_code_and_the_tail_of_its_log(tmp_path):
    code = "import sys\nfor i in range(30): print('line', i)\nprint('boom: the last words')\nsys.exit(3)"
    started = wk.start([[sys.executable, "-c", code]], [dict(os.environ)], [wk.log_path(tmp_path, 1)])
    assert wk.wait(started, poll=0.05) is None and started[0].returncode == 3
    report = wk.failure_report(started[0], 2, lines=5)
    head, *last = report.splitlines()
    assert head.startswith("worker 1 of 2 failed (exit code 3)") and str(wk.log_path(tmp_path, 1)) in head
    assert [line.strip() for line in last] == ["line 26", "line 27", "line 28", "line 29", "boom: the last words"]
    assert wk.describe_exit(-9) == "killed by SIGKILL"


@pytest.mark.slow
def test_two_workers_train_a_grid_once_and_print_the_leaderboard_once(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLORBENCH_CACHE", str(tmp_path / "cache"))  # the decoded set the workers share
    monkeypatch.delenv(wk.SHARED_CACHE_ENV, raising=False)
    out = tmp_path / "run"
    argv = ["--grid", "smoke", "--seeds", "2", "--out", str(out), *TINY, "--workers", "2"]
    rc, stdout, err = run(argv, capsys)  # the launcher in this process, its two workers as subprocesses
    logs = sorted((out / wk.LOG_FOLDER).glob("worker-*.log"))
    assert rc == 0, err + "".join(f.read_text()[-3000:] for f in logs)
    assert [f.name for f in logs] == ["worker-1.log", "worker-2.log"]
    assert stdout.count("Leaderboard:") == 1 and "Verdict:" in stdout  # the workers' own went to their logs
    assert "4 run(s) trained by 2 workers" in err, err
    rows = read_rows(out / "runs.csv")
    trained = Counter(f"{r['cell']}/{r['seed']}" for r in rows if r["model"] != "(none)")
    assert trained == Counter({f"{c}/{s}": 1 for c in ("mse", "kl") for s in (0, 1)}), trained
    assert all(r["status"] == "ok" for r in rows)
    assert Counter(r["cell"] for r in rows if r["model"] == "(none)") == Counter(
        {"grey": 1, "mean_colour": 1, "oracle_tint": 1})
    threads = int(os.environ.get("OMP_NUM_THREADS") or max(1, wk.usable_cores() // 2))
    assert {int(r["torch_threads"]) for r in rows if r["model"] != "(none)"} == {threads}
    assert len(list((tmp_path / "cache" / "decoded").glob("*.u8"))) == 1  # decoded once, by the launcher
    assert wk.SHARED_CACHE_ENV not in os.environ  # set for the launcher's check and its workers only
    # the same command again: the grid is complete, so no worker starts and the leaderboard is printed once
    rc, stdout, err = run(argv, capsys)
    assert rc == 0 and stdout.count("Leaderboard:") == 1 and "starting" not in err, err
    assert len(read_rows(out / "runs.csv")) == len(rows)


def test_a_failed_worker_fails_the_command_and_is_reported(tmp_path, capsys, monkeypatch):
    def failing(argv, gpus=None):
        return [sys.executable, "-c", "import sys; print('no luck here'); sys.exit(3)"]

    monkeypatch.setattr(wk, "worker_command", failing)
    out = tmp_path / "run"
    rc, _, err = run(["--grid", "smoke", "--seeds", "1", "--out", str(out), *TINY, "--workers", "2"], capsys)
    assert rc == 1, err
    for n in (1, 2):
        assert f"worker {n} of 2 failed (exit code 3)" in err and str(wk.log_path(out, n)) in err
    assert "    no luck here" in err and "error: 2 of 2 workers failed" in err
