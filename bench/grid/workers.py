"""Several local workers of one grid run: ``colorbench ablate ... --workers N`` (or ``--gpus 0,1``) starts the same
command, less those two options, as N subprocesses that split the run's study as workers started by hand do
(``bench.grid.study``), waits for them and stops them together.

This module decides what each worker gets (its command line, its environment: CPU threads, OpenMP's wait policy,
its GPU), starts the processes with one log file each (``<run folder>/workers/worker-<i>.log``), forwards Ctrl-C
and SIGTERM to them and reports the ones that failed. The run folder and the study are opened by ``bench.ablate``
before any worker starts. Imports nothing but the standard library: a worker calls ``follow_launcher`` before
anything heavy.
"""
from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence
from bench.core.paths import SOURCE_ROOT

#: the folder of colorbench's packages: put first on each worker's import path, so that it runs this very code
ROOT = SOURCE_ROOT
#: the launcher's own options: a worker's command line is the launcher's without them
LAUNCHER_OPTIONS = ("--workers", "--gpus")
#: flags a worker leaves out: ``-q`` would silence the closing line (``N runs trained by this worker``) that the
#: launcher reads from its log (``trained_by``)
DROPPED_FLAGS = ("-q", "--quiet")
#: set in a worker's environment: ``<index>/<count> <launcher pid>`` (``follow_launcher`` reads it)
WORKER_ENV = "COLORBENCH_WORKER"
#: ``bench.data.sources.SHARED_CACHE_ENV`` (not imported: it imports torch): set for the launcher's check of the data
#: and for its workers, so that the set is decoded once, by the launcher, and memory-mapped by every worker
SHARED_CACHE_ENV = "COLORBENCH_SHARED_CACHE"
#: the run folder's subfolder of the workers' log files
LOG_FOLDER = "workers"
#: seconds the workers get to stop after a forwarded Ctrl-C (closing their trials) before they are killed
STOP_GRACE = 30.0


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask where the OS has one, e.g. under ``taskset`` or a
    container's cpuset), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def thread_split(workers: int, cores: int, env: Mapping[str, str]) -> dict[str, str]:
    """The OpenMP settings each of ``workers`` processes on ``cores`` cores gets, so that they do not fight over them.

    Each worker gets ``max(1, cores // workers)`` threads (torch takes its intra-op thread count from
    ``OMP_NUM_THREADS``), unless the user set ``OMP_NUM_THREADS``: then that is kept. When the threads of all
    workers together are more than the cores (oversubscribed), threads must not spin at barriers waiting for
    descheduled peers (9× slower steps, ``results/step-speed-cpu.md``), so ``OMP_WAIT_POLICY=PASSIVE``, again
    unless the user chose a policy: on an idle machine that is not oversubscribed spinning is faster (``bench``'s
    docstring), so it is left alone there.

    Args:
        workers: the number of worker processes (≥ 1).
        cores: the usable cores (``usable_cores``).
        env: the launcher's environment (the user's settings).

    Returns:
        the variables to set in every worker's environment (none of those the user set).
    """
    out = {}
    user_threads = env.get("OMP_NUM_THREADS", "").strip()
    if user_threads.isdigit() and int(user_threads) > 0:
        threads = int(user_threads)
    else:
        threads = max(1, cores // max(1, workers))
        out["OMP_NUM_THREADS"] = str(threads)
    if workers * threads > cores and not env.get("OMP_WAIT_POLICY", "").strip():
        out["OMP_WAIT_POLICY"] = "PASSIVE"
    return out


def worker_count(workers: int | None, gpus: Sequence[str] | None) -> int | None:
    """How many workers ``--workers`` and ``--gpus`` ask for: ``--workers``, else one per listed GPU; None when
    neither is given (this process is the only worker).

    Raises:
        ValueError: both are given and disagree.
    """
    if gpus and workers is not None and workers != len(gpus):
        raise ValueError(f"--workers {workers} and --gpus {','.join(gpus)} disagree: --gpus starts one worker per "
                         f"listed GPU ({len(gpus)}); give one of them, or as many workers as GPUs")
    return workers if workers is not None else (len(gpus) if gpus else None)


def check_gpu_device(gpus: Sequence[str] | None, device: str | None) -> None:
    """Refuse a ``--device`` that cannot work with ``--gpus``: each worker sees only its own GPU, as ``cuda:0``.

    Raises:
        ValueError: naming the conflict.
    """
    if gpus and device not in (None, "", "auto", "cuda", "cuda:0"):
        raise ValueError(f"--gpus gives each worker one GPU, which it sees as cuda:0; --device {device} cannot be "
                         f"used with it (leave --device out)")


def worker_argv(argv: Sequence[str], gpus: Sequence[str] | None = None) -> list[str]:
    """A worker's command-line arguments: the launcher's without ``--workers``/``--gpus`` and ``-q``, with
    ``--no-progress`` (bars in a log file are noise) and, with ``--gpus`` and no ``--device``, ``--device cuda``: a
    worker whose GPU is missing then fails instead of training on the CPU. Everything else is kept as given, so that
    ``--import`` and ``--config`` (and its ``plugins:``) load the same plugins in every worker (started in the
    launcher's folder: relative paths name the same files).

    Args:
        argv: the launcher's arguments (after ``ablate``).
        gpus: the ``--gpus`` list, if given.
    """
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a in LAUNCHER_OPTIONS:
            skip = True  # its value follows
        elif a in DROPPED_FLAGS:
            continue
        elif not a.startswith(tuple(f"{o}=" for o in LAUNCHER_OPTIONS)):
            out.append(a)
    if "--no-progress" not in out:
        out.append("--no-progress")
    if gpus and "--device" not in out and not any(a.startswith("--device=") for a in out):
        out += ["--device", "cuda"]
    return out


def worker_command(argv: Sequence[str], gpus: Sequence[str] | None = None) -> list[str]:
    """The full command of a worker: this Python running ``bench.ablate`` with ``worker_argv``. ``-P`` (Python
    3.11+) keeps the current folder off the import path: a launcher started as ``colorbench`` in another project's
    folder with its own ``models/`` would otherwise start workers that import that one."""
    safe = ["-P"] if sys.version_info >= (3, 11) else []
    return [sys.executable, *safe, "-m", "bench.ablate", *worker_argv(argv, gpus)]


def worker_env(env: Mapping[str, str], index: int, workers: int, cores: int,
               gpus: Sequence[str] | None = None, launcher_pid: int | None = None) -> dict[str, str]:
    """The environment of worker ``index`` (0-based) of ``workers``.

    Args:
        env: the launcher's environment.
        index, workers: which worker, of how many.
        cores: the usable cores (``usable_cores``), split by ``thread_split``.
        gpus: the ``--gpus`` list: worker i sees only ``gpus[i]`` (``CUDA_VISIBLE_DEVICES``).
        launcher_pid: the launcher's process id (default: this process's), for ``follow_launcher``.
    """
    out = {SHARED_CACHE_ENV: "1", **env, **thread_split(workers, cores, env),
           "PYTHONUNBUFFERED": "1",  # the log is written as it happens
           WORKER_ENV: f"{index + 1}/{workers} {os.getpid() if launcher_pid is None else launcher_pid}"}
    out["PYTHONPATH"] = os.pathsep.join([str(ROOT), *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])])
    if gpus:
        out["CUDA_VISIBLE_DEVICES"] = gpus[index]
    return out


@contextlib.contextmanager
def shared_decoding():
    """While the launcher checks the data: decode them into the cache its workers will read (``SHARED_CACHE_ENV``,
    unless the user set it), then leave this process's environment as it was."""
    before = os.environ.get(SHARED_CACHE_ENV)
    os.environ.setdefault(SHARED_CACHE_ENV, "1")
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(SHARED_CACHE_ENV, None)


def follow_launcher() -> None:
    """In a worker started by a launcher: answer Ctrl-C (SIGINT) even where the launcher ignored it, and stop (as on
    Ctrl-C) when the launcher dies, even by SIGKILL, so that no worker is left behind (Linux's
    ``PR_SET_PDEATHSIG``; nothing elsewhere). Does nothing in other processes."""
    tag = os.environ.get(WORKER_ENV, "")
    m = re.fullmatch(r"\d+/\d+ (\d+)", tag)
    if not m:
        return
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:  # inherited from a launcher started in the background
        signal.signal(signal.SIGINT, signal.default_int_handler)  # the launcher stops its workers with SIGINT
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGINT)  # 1 = PR_SET_PDEATHSIG
    if os.getppid() != int(m.group(1)):  # the launcher was already gone before the line above
        os.kill(os.getpid(), signal.SIGINT)


@dataclass
class Worker:
    """One started worker: its number (1-based), process and log file."""

    number: int
    proc: subprocess.Popen
    log: Path

    @property
    def returncode(self) -> int | None:
        return self.proc.poll()


def log_path(run_dir: Path, number: int) -> Path:
    """The log file of worker ``number`` (1-based): ``<run folder>/workers/worker-<number>.log``."""
    return Path(run_dir) / LOG_FOLDER / f"worker-{number}.log"


def start(commands: Sequence[Sequence[str]], envs: Sequence[Mapping[str, str]], logs: Sequence[Path],
          cwd: Path | None = None) -> list[Worker]:
    """Start one process per command, its output (stdout and stderr) into its log file (written anew).

    Each runs in its own process group: a Ctrl-C at the terminal reaches the launcher only, which forwards it once
    (``wait``); a second one from the terminal would interrupt a worker while it closes its trial.
    """
    started = []
    try:
        for i, (cmd, env, log) in enumerate(zip(commands, envs, logs), 1):
            log.parent.mkdir(parents=True, exist_ok=True)
            with open(log, "wb") as fh:
                proc = subprocess.Popen(list(cmd), env=dict(env), cwd=cwd, stdin=subprocess.DEVNULL, stdout=fh,
                                        stderr=subprocess.STDOUT, start_new_session=True)
            started.append(Worker(i, proc, log))
    except BaseException:
        stop(started)
        raise
    return started


def stop(workers: Sequence[Worker], grace: float = STOP_GRACE) -> None:
    """Ask every live worker to stop as on Ctrl-C, and kill those still running after ``grace`` seconds."""
    for w in workers:
        if w.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                w.proc.send_signal(signal.SIGINT)
    deadline = time.monotonic() + grace
    for w in workers:
        with contextlib.suppress(subprocess.TimeoutExpired):
            w.proc.wait(max(0.0, deadline - time.monotonic()))
        if w.proc.poll() is None:
            w.proc.kill()
            w.proc.wait()


def wait(workers: Sequence[Worker], grace: float = STOP_GRACE, poll: float = 0.2,
         tick: Callable[[], None] | None = None, tick_every: float = 5.0) -> int | None:
    """Wait until every worker has ended, forwarding Ctrl-C (SIGINT) and SIGTERM to them as SIGINT (a worker then
    closes its trial as interrupted, so that the same command resumes it at once); a worker still running
    ``grace`` seconds after the first signal, or any after a second one, is killed.

    Args:
        workers: the started workers (``start``).
        grace: seconds between the forwarded signal and SIGKILL.
        poll: seconds between checks.
        tick: called every ``tick_every`` seconds while the workers run (the launcher's progress bar).

    Returns:
        the first signal received (``signal.SIGINT`` or ``signal.SIGTERM``), or None.
    """
    got: list[int] = []
    since = [0.0]

    def forward(signum, frame):
        if not got:
            since[0] = time.monotonic()
        got.append(signum)
        for w in workers:
            if w.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    w.proc.send_signal(signal.SIGINT if len(got) == 1 else signal.SIGKILL)

    before = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        ticked = time.monotonic()
        while any(w.proc.poll() is None for w in workers):
            if got and time.monotonic() - since[0] > grace:
                for w in workers:
                    if w.proc.poll() is None:
                        w.proc.kill()
            if tick is not None and not got and time.monotonic() - ticked >= tick_every:
                ticked = time.monotonic()
                tick()
            time.sleep(poll)
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)
    return got[0] if got else None


def tail(path: Path, lines: int = 20) -> list[str]:
    """The last ``lines`` lines of a log file (a progress bar's carriage returns as line ends)."""
    try:
        text = path.read_bytes()[-64_000:].decode("utf-8", "replace")
    except OSError as err:
        return [f"(cannot read the log: {err.strerror or err})"]
    return [line for line in re.split(r"\r\n|\r|\n", text) if line.strip()][-lines:]


def describe_exit(code: int) -> str:
    """``exit code 1``, or ``killed by SIGKILL`` for a process ended by a signal."""
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
        return f"killed by signal {-code}"
    return f"exit code {code}"


def failure_report(worker: Worker, count: int, lines: int = 20) -> str:
    """What the launcher says of a worker that failed: its exit code and the tail of its log."""
    last = tail(worker.log, lines)
    head = (f"worker {worker.number} of {count} failed ({describe_exit(worker.proc.returncode)}); the last "
            f"{len(last)} line(s) of its log {worker.log}:")
    return "\n".join([head, *(f"    {line}" for line in last)])


def trained_by(log: Path) -> int:
    """The runs a worker says it trained (its closing line, ``N runs trained by this worker``), 0 without one."""
    found = re.findall(r"(\d+) runs? trained by this worker", "\n".join(tail(log, 200)))
    return int(found[-1]) if found else 0
