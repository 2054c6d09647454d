"""Chaos test of the multi-worker design (issue 31): three workers share one study (a journal file, and PostgreSQL
where it runs); every few seconds a random worker is SIGKILLed and started again (``MAX_KILLS`` times, or until the grid
completes). Then every run is recorded exactly once with status ok, the journal is undamaged and opens with Optuna,
and the leaderboard equals a quiet single-worker run's of the same configuration.

The schedule of kills (when, and which of the three worker slots) is drawn from ``CHAOS_SEED`` (override with
``COLORBENCH_CHAOS_SEED`` to replay or vary it). What a kill hits (a worker starting up, training, checkpointing,
writing the journal or its CSV files) also depends on process timing, so a failure names the seed, the schedule
and the workers' logs.

The numbers must match exactly: training is deterministic on the CPU for a fixed seed and one thread
(``OMP_NUM_THREADS=1`` in every worker), and a run killed after a checkpoint resumes from it (``checkpoint_every``)
with its random state. One rule is kept out of the chaos: a key that crashed ``MAX_ATTEMPTS`` times is given up and
recorded as failed (by design, ``bench.grid.study``); the harness spares a worker whose run is on its last attempt, so
the outcome does not hinge on the same key being hit three times.
"""
from __future__ import annotations

import contextlib
import csv
import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import optuna
import pytest
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from bench.core.records import read_rows
from bench.grid import study as gs

ROOT = Path(__file__).resolve().parent.parent
PG_URL = os.environ.get("COLORBENCH_PG_URL")
CHAOS_SEED = int(os.environ.get("COLORBENCH_CHAOS_SEED", "31"))
BOUND_S = 300  # per storage, a guard against hangs (idle: about 75 s): on timeout every worker is killed, the test fails
WORKERS = 3
KILL_EVERY = (3.0, 6.0)  # seconds between kills, uniform
FIRST_KILL = 5.0  # seconds before the schedule starts (the first workers start up meanwhile)
MAX_KILLS = 8  # then the workers finish the grid undisturbed (a worker needs about 5 s to start up on 2 cores)
# 8 runs (4 cells × 2 seeds) of 40 steps at 32 px (about 2 s each), a checkpoint every 10 steps, 2-second
# heartbeats: a killed worker's run is stale after 6 s and resumed from its checkpoint by another worker
CONFIG = ["--grid", "tiny", "--seeds", "2", "--folds", "1", "--steps", "40", "--set", "val_every=10",
          "--set", "checkpoint_every=10", "--set", "batch_size=4", "--set", "size=32", "--set", "crop=32",
          "--set", "eval_size=32", "--no-progress", "--heartbeat", "2"]
KEYS = {f"unet_vgg16/{c}/{s}" for c in ("mse", "l1", "huber", "mse_lr") for s in (0, 1)}
BASELINE_CELLS = ("grey", "mean_colour", "oracle_tint")


def start_worker(out: Path, extra: list[str], log: Path) -> subprocess.Popen:
    """One ``python -m bench.ablate`` worker, one thread, its output in ``log`` (a file: no pipe to fill)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE", "PYTHONUNBUFFERED": "1"}
    with open(log, "w") as fh:
        return subprocess.Popen([sys.executable, "-m", "bench.ablate", "--out", str(out), *CONFIG, *extra],
                                cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT)


@pytest.fixture(scope="module")
def quiet(tmp_path_factory) -> Path:
    """A quiet single-worker run of the same configuration (its own journal)."""
    out = tmp_path_factory.mktemp("quiet") / "run"
    log = out.parent / "worker.log"
    proc = start_worker(out, [], log)
    try:
        rc = proc.wait(timeout=BOUND_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert rc == 0, log.read_text()[-3000:]
    return out


class Chaos:
    """Three workers on one study; a seeded schedule of SIGKILLs, each victim started again at once."""

    def __init__(self, out: Path, extra: list[str], study: callable, seed: int):
        self.out, self.extra, self.study, self.rng = out, extra, study, random.Random(seed)
        self.logs = out.parent / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.procs: list[subprocess.Popen | None] = [None] * WORKERS
        self.born = [0.0] * WORKERS  # when each slot's worker was started
        self.events: list[str] = []  # what happened, for the failure message
        self.started = self.kills = 0

    def spawn(self, slot: int) -> None:
        self.started += 1
        self.born[slot] = time.monotonic()
        self.procs[slot] = start_worker(self.out, self.extra, self.logs / f"{self.started:03d}-slot{slot}.log")

    def on_last_attempt(self, pid: int) -> bool:
        """Whether the (stopped) worker ``pid`` may hold a run on its last attempt (or an unlabelled one that is)."""
        try:
            running = self.study().get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        except KeyError:  # no worker has created the study yet
            return False
        return any(int(t.user_attrs.get("attempt", 1)) >= gs.MAX_ATTEMPTS
                   and t.user_attrs.get("worker", f":{pid}").endswith(f":{pid}") for t in running)

    def holds_run(self, pid: int) -> bool:
        """Whether the (stopped) worker ``pid`` holds a running trial."""
        try:
            running = self.study().get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        except KeyError:
            return False
        return any(str(t.user_attrs.get("worker", "")).endswith(f":{pid}") for t in running)

    def kill_one(self, now: float) -> bool:
        """SIGKILL a worker and start its slot again. The slots past their start-up (``FIRST_KILL`` s old) are tried
        in a random order: the first whose worker holds a running trial is killed (so that kills hit training,
        checkpointing or recording, not only start-ups), else the first of them; a worker whose run is on its last
        attempt is spared. Each candidate is frozen (SIGSTOP) while the storage is read, so it cannot claim another
        run meanwhile. Only the first kill may hit a worker that holds no run: on a loaded machine start-ups take
        longer than the kill interval, and kills of start-ups alone would test nothing. Returns whether it killed."""
        grown = [i for i in range(WORKERS) if time.monotonic() - self.born[i] >= FIRST_KILL] or list(range(WORKERS))
        order = self.rng.sample(grown, len(grown))
        chosen = None
        for slot in order:
            proc = self.procs[slot]
            if proc.poll() is not None:
                continue
            os.kill(proc.pid, signal.SIGSTOP)
            try:
                spare, busy = self.on_last_attempt(proc.pid), self.holds_run(proc.pid)
            except BaseException:
                os.kill(proc.pid, signal.SIGCONT)
                raise
            if spare:
                self.events.append(f"{now:6.1f} s: spared slot {slot} (pid {proc.pid}: a run on its last attempt)")
            elif busy or chosen is None:
                if chosen is not None:
                    os.kill(self.procs[chosen].pid, signal.SIGCONT)
                chosen = slot
                if busy:
                    break
                continue
            os.kill(proc.pid, signal.SIGCONT)
        if chosen is not None and self.kills and not self.holds_run(self.procs[chosen].pid):
            os.kill(self.procs[chosen].pid, signal.SIGCONT)  # an idle worker after the first kill: try again soon
            chosen = None
        if chosen is None:
            return False
        proc = self.procs[chosen]
        proc.kill()
        proc.wait()
        self.kills += 1
        self.events.append(f"{now:6.1f} s: killed slot {chosen} (pid {proc.pid})")
        self.spawn(chosen)
        return True

    def run(self) -> float:
        """Run until every worker has exited; returns the wall time. Fails on a worker's error or the time bound."""
        t0 = time.monotonic()
        for slot in range(WORKERS):
            self.spawn(slot)
        next_kill, done = t0 + FIRST_KILL + self.rng.uniform(*KILL_EVERY), False
        try:
            while any(p.poll() is None for p in self.procs):
                now = time.monotonic()
                if now - t0 > BOUND_S:
                    pytest.fail(f"the chaos run did not finish within {BOUND_S} s\n{self.story()}")
                for p in self.procs:
                    if p.poll() not in (None, 0):
                        pytest.fail(f"a worker failed (exit code {p.returncode}), not by a kill\n{self.story()}")
                done = done or any(p.poll() == 0 for p in self.procs)  # a worker stops only once the grid is done
                if not done and now >= next_kill and self.kills < MAX_KILLS:
                    killed = self.kill_one(now - t0)
                    next_kill = now + (self.rng.uniform(*KILL_EVERY) if killed else 0.5)
                time.sleep(0.1)
            return time.monotonic() - t0
        finally:
            for p in self.procs:
                if p is not None and p.poll() is None:
                    p.kill()
                    p.wait()

    def story(self) -> str:
        tails = [f"--- {f.name}\n{f.read_text()[-1500:]}" for f in sorted(self.logs.glob("*.log"))[-6:]]
        return "\n".join([f"chaos seed {CHAOS_SEED}:", *self.events, *tails])


def journal_study(path: Path, name: str) -> callable:
    """A loader of the study in the journal ``path`` that never takes the journal's lock (a stopped worker may hold
    it) and never repairs the file (``bench.grid.study.check_journal`` would): plain Optuna, reading only."""
    storage = {}

    def load() -> optuna.Study:
        if "s" not in storage:
            if not path.exists():
                raise KeyError(name)
            storage["s"] = JournalStorage(JournalFileBackend(str(path)))
        return optuna.load_study(study_name=name, storage=storage["s"])

    return load


def check_records(out: Path) -> None:
    """runs.csv has every key and every baseline exactly once, all ok; per-image and history rows are unique."""
    rows = read_rows(out / "runs.csv")
    trained = Counter(f"{r['model']}/{r['cell']}/{r['seed']}" for r in rows if r["model"] != "(none)")
    assert trained == Counter({k: 1 for k in KEYS}), trained
    assert Counter(r["cell"] for r in rows if r["model"] == "(none)") == Counter({c: 1 for c in BASELINE_CELLS})
    assert [r["status"] for r in rows] == ["ok"] * len(rows)
    per_image = read_rows(out / "per_image.csv")
    assert len(per_image) == len({(r["model"], r["cell"], r["seed"], r["image"]) for r in per_image})
    assert len(per_image) == 6 * (len(KEYS) + len(BASELINE_CELLS))  # 6 bundled test photos per row
    history = read_rows(out / "history.csv")
    assert len(history) == len({(r["model"], r["cell"], r["seed"], r["step"]) for r in history}) == 4 * len(KEYS)


def check_study(study: optuna.Study) -> int:
    """Every key completed exactly once, nothing left running or waiting; returns the number of crashed trials
    (the killed runs that were taken over)."""
    trials = study.get_trials(deepcopy=False)
    complete = Counter(gs.key_of(t) for t in trials if t.state == TrialState.COMPLETE)
    assert complete == Counter({k: 1 for k in KEYS}), complete
    assert not [t.number for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    return sum(t.state == TrialState.FAIL and t.user_attrs.get("outcome") not in gs.NOT_A_CRASH for t in trials)


def same_results(chaos: Path, quiet: Path) -> None:
    """Each run's PSNR and the leaderboard's per-cell PSNR equal the quiet run's exactly."""
    def runs(out):
        return {(r["model"], r["cell"], r["seed"]): r["psnr"] for r in read_rows(out / "runs.csv")}

    def board(out):
        with open(out / "leaderboard.csv", newline="") as fh:
            return {(r["model"], r["cell"]): r["psnr_mean"] for r in csv.DictReader(fh)}

    assert runs(chaos) == runs(quiet)
    assert board(chaos) == board(quiet) and len(board(quiet)) == 4 + len(BASELINE_CELLS)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["journal", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_chaos_killed_workers_record_every_run_once(tmp_path, backend, quiet):
    name = f"test-chaos-{uuid.uuid4().hex[:12]}"
    out = tmp_path / "run"
    extra = ["--study-name", name]
    if backend == "postgresql":
        if not PG_URL:
            pytest.skip("COLORBENCH_PG_URL is not set (.ci/run sets it and checks the server is reachable)")
        storage = gs.open_storage(PG_URL, heartbeat=2)
        extra += ["--storage", PG_URL]

        def load():
            return optuna.load_study(study_name=name, storage=storage)
    else:
        load = journal_study(out / "study.journal", name)
    try:
        chaos = Chaos(out, extra, load, CHAOS_SEED)
        wall = chaos.run()
        if backend == "journal":  # undamaged: every line is whole JSON, and Optuna opens it as it is
            lines = (out / "study.journal").read_bytes().split(b"\n")
            assert lines[-1] == b"" and all(json.loads(line) is not None for line in lines[:-1])
            load = journal_study(out / "study.journal", name)
        crashed = check_study(load())
        print(f"chaos ({backend}): {wall:.0f} s, {chaos.kills} kills, {crashed} killed runs taken over\n"
              + "\n".join(chaos.events))
        assert crashed >= 1, f"no kill hit a running trial: the chaos tested nothing\n{chaos.story()}"
        check_records(out)
        same_results(out, quiet)
    finally:
        if backend == "postgresql":
            with contextlib.suppress(KeyError):
                optuna.delete_study(study_name=name, storage=storage)
