"""Ablation grids as Optuna studies: several workers split a grid, each run is trained exactly once, a killed worker's
run is retried, a diverging run fails with its reason, on a journal file and on a real PostgreSQL server."""
from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from bench import ablate
from bench.config import grids
from bench.core.records import read_rows
from bench.grid import study as gs
from helpers import hanging_ablate

ROOT = Path(__file__).resolve().parent.parent
PG_URL = os.environ.get("COLORBENCH_PG_URL")
# CPU-small: 2 training steps of 4 crops, validation after each (two intermediate values per trial), 1-second
# heartbeats (a trial without one for 3 s is stale)
# one split (--folds 1): these tests are about workers and storage, not about the bundled set's 4-fold rotation
FAST = ["--steps", "2", "--set", "val_every=1", "--set", "batch_size=4", "--no-progress", "--heartbeat", "1",
        "--folds", "1"]
TINY_KEYS = {f"unet_vgg16/{c}/{s}" for c in ("mse", "l1", "huber", "mse_lr") for s in (0, 1)}


def worker(out: Path, *extra: str, hang_at: int | None = None) -> subprocess.Popen:
    """Start ``python -m bench.ablate`` as a separate worker process (one thread each: two share the 2 cores); with
    ``hang_at``, one whose trial blocks after its validation at that step (``helpers.hanging_ablate``)."""
    run = ["-m", "bench.ablate"] if hang_at is None else hanging_ablate(hang_at)
    cmd = [sys.executable, *run, "--grid", "tiny", "--out", str(out), *FAST, *extra]
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(cmd, cwd=ROOT, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(proc: subprocess.Popen, timeout: float = 240) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-3000:]
    return out


def check_grid(study: optuna.Study, run_dir: Path, keys: set[str]) -> None:
    """Every key completed exactly once in the storage and recorded exactly once in the run folder."""
    trials = study.get_trials(deepcopy=False)
    complete = Counter(gs.key_of(t) for t in trials if t.state == TrialState.COMPLETE)
    assert complete == Counter({k: 1 for k in keys}), complete
    trained = Counter(gs.key_of(t) for t in trials if t.user_attrs.get("outcome") == "ok")
    assert trained == complete  # a duplicate is closed without training
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    rows = read_rows(run_dir / "runs.csv")
    got = Counter(f"{r['model']}/{r['cell']}/{r['seed']}" for r in rows if r["model"] != "(none)")
    assert got == Counter({k: 1 for k in keys}), got
    assert all(r["status"] == "ok" for r in rows)
    assert sum(r["cell"] == "grey" for r in rows) == sum(r["cell"] == "mean_colour" for r in rows) == 1
    per_image = read_rows(run_dir / "per_image.csv")
    assert len(per_image) == len({(r["model"], r["cell"], r["seed"], r["image"]) for r in per_image})
    assert len(per_image) == 6 * (len(keys) + 3)  # 6 bundled test photos per run, and the three untrained rows
    history = read_rows(run_dir / "history.csv")
    assert len(history) == 2 * len(keys)  # validations at steps 1 and 2, each run once
    board = (run_dir / "leaderboard.md").read_text()
    assert all(f"| {c} " in board for c in ("mse", "l1", "huber", "mse_lr", "grey", "mean_colour"))


def journal_study(run_dir: Path) -> optuna.Study:
    name = json.loads((run_dir / "run.json").read_text())["study"]
    return optuna.load_study(study_name=name, storage=gs.open_storage(run_dir / "study.journal"))


@pytest.mark.slow
def test_two_workers_split_grid_on_embedded_storage(tmp_path):
    out = tmp_path / "run"
    procs = [worker(out, "--seeds", "2"), worker(out, "--seeds", "2")]
    logs = [finish(p) for p in procs]
    study = journal_study(out)
    check_grid(study, out, TINY_KEYS)
    # between them, the workers trained 8 runs (which worker trains how many depends on their start-up times)
    trained = [re.search(r"(\d+) runs? trained by this worker", log) for log in logs]
    assert sum(int(m.group(1)) for m in trained if m) == 8, logs
    # a finished grid: re-running trains nothing and prints the leaderboard again
    again = finish(worker(out, "--seeds", "2"))
    assert "8 already done" in again and "trained by this worker" not in again
    assert re.search(r"^\s*\d+\s+mse_lr\s", again, re.M)  # the compact leaderboard lists every cell
    assert len(journal_study(out).trials) == len(study.trials)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["journal", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_killed_worker_is_detected_stale_and_retried(tmp_path, backend):
    out = tmp_path / "run"
    keys = {k for k in TINY_KEYS if k.endswith("/0")}
    extra, name = ("--seeds", "1"), None
    if backend == "postgresql":  # Optuna's own RDB heartbeat, checked against the database server's clock
        if not PG_URL:
            pytest.skip("COLORBENCH_PG_URL is not set (.ci/run sets it and checks the server is reachable)")
        name = f"test-kill-{uuid.uuid4().hex[:12]}"
        extra += ("--storage", PG_URL, "--study-name", name)
        storage = gs.open_storage(PG_URL)

    def load() -> optuna.Study:
        return optuna.load_study(study_name=name, storage=storage) if name else journal_study(out)

    try:
        victim = worker(out, *extra, hang_at=1)
        # wait until the victim is mid-trial: a RUNNING trial that has reported its step-1 validation
        deadline, running = time.monotonic() + 120, None
        while running is None:
            assert time.monotonic() < deadline and victim.poll() is None, victim.communicate()[0] if victim.poll() else ""
            time.sleep(0.5)
            if (out / "run.json").exists():
                running = next((t for t in load().trials
                                if t.state == TrialState.RUNNING and 1 in t.intermediate_values), None)
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=30)
        killed_key = gs.key_of(running)
        # a rerun takes the waiting runs, then fails the stale trial (no heartbeat for 3 s) and trains its run again
        log = finish(worker(out, *extra))
        assert "stale" in log, log
        study = load()
        check_grid(study, out, keys)
        by_key = [t for t in study.trials if gs.key_of(t) == killed_key]
        assert [t.state for t in by_key] == [TrialState.FAIL, TrialState.COMPLETE]
        assert by_key[1].user_attrs["attempt"] == 2
        check_takeover_delay(study, by_key[1])
    finally:
        if name:
            with contextlib.suppress(KeyError):
                optuna.delete_study(study_name=name, storage=storage)


def check_takeover_delay(study: optuna.Study, retried, heartbeat: float = 1.0) -> None:
    """The lost run was taken over within 3 heartbeats (its grace) + 1 (the waiting loop's poll) + 2 s of slack
    after the rerun finished its other runs (or, if it finished them before the lost run was due, after that)."""
    others = [t.datetime_complete for t in study.trials
              if t.state == TrialState.COMPLETE and t.number != retried.number and t.datetime_complete]
    delay = (retried.datetime_start - max(others)).total_seconds()
    assert delay <= 4 * heartbeat + 2, f"taken over {delay:.1f} s after the last other run"


@pytest.mark.parametrize("backend", ["journal", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_run_lost_before_its_first_heartbeat_is_taken_over(tmp_path, backend):
    """A worker killed right after claiming a run, before any heartbeat (Optuna's RDB check skips such a trial):
    the rerun takes it over after the grace period instead of waiting for it forever (issue 23)."""
    out, name = tmp_path / "run", f"test-lost-{uuid.uuid4().hex[:12]}"
    extra = ["--seeds", "1", "--study-name", name]
    if backend == "postgresql":
        if not PG_URL:
            pytest.skip("COLORBENCH_PG_URL is not set (.ci/run sets it and checks the server is reachable)")
        url = PG_URL
        extra += ["--storage", PG_URL]
    else:
        url = str(out / "study.journal")
    storage = gs.open_storage(url, heartbeat=1)
    try:
        study = optuna.create_study(study_name=name, storage=storage, direction="maximize")
        gs.enqueue_keys(study, {"unet_vgg16/l1/0": {"model": "unet_vgg16", "cell": "l1", "seed": 0}})
        lost = gs.claim(study)  # RUNNING, and its worker never beats (as if killed at once)
        assert lost is not None and gs.key_of(lost) == "unet_vgg16/l1/0"
        proc = worker(out, *extra)
        try:
            log = finish(proc, timeout=150)
        except subprocess.TimeoutExpired:
            proc.kill()
            pytest.fail(f"the rerun still waits for the lost run: {proc.communicate()[0][-2000:]}")
        assert "stale" in log, log
        study = optuna.load_study(study_name=name, storage=storage)
        check_grid(study, out, {k for k in TINY_KEYS if k.endswith("/0")})
        by_key = [t for t in study.trials if gs.key_of(t) == "unet_vgg16/l1/0"]
        assert [t.state for t in by_key] == [TrialState.FAIL, TrialState.COMPLETE]
        check_takeover_delay(study, by_key[1])
    finally:
        if name:
            with contextlib.suppress(KeyError):
                optuna.delete_study(study_name=name, storage=storage)


def test_diverging_run_fails_with_reason_and_grid_goes_on(tmp_path, monkeypatch):
    monkeypatch.setitem(grids.GRIDS, "t_diverge", grids.Grid("t_diverge", "one sane and one diverging cell", (
        grids.Cell("ok", {"loss": "mse"}), grids.Cell("boom", {"loss": "mse", "lr": 1e12}))))
    out = tmp_path / "run"
    argv = ["--grid", "t_diverge", "--seeds", "1", "--out", str(out), *FAST]
    assert ablate.main(argv) == 0
    study = journal_study(out)
    boom = [t for t in study.trials if t.user_attrs.get("cell") == "boom"]
    assert len(boom) == 1 and boom[0].state == TrialState.FAIL
    err = boom[0].user_attrs["error"].lower()
    assert boom[0].user_attrs["outcome"] == "diverged" and ("nan" in err or "inf" in err)  # NaN or ±inf
    rows = {r["cell"]: r for r in read_rows(out / "runs.csv")}
    assert rows["ok"]["status"] == "ok"
    assert rows["boom"]["status"] == "failed" and rows["boom"]["failed_step"] and rows["boom"]["error"]
    assert "## Failed runs" in (out / "leaderboard.md").read_text()
    # deterministic divergence is not retried
    assert ablate.main(argv) == 0
    assert len(journal_study(out).trials) == 2


def test_concurrent_enqueues_train_each_key_once(tmp_path):
    study = optuna.create_study(storage=gs.open_storage(tmp_path / "s.journal", heartbeat=1), direction="maximize")
    keys = {"m/a/0": {"model": "m", "cell": "a", "seed": 0}}
    # two workers enqueue at the same moment (simulated: the key is queued twice)
    for _ in range(2):
        study.enqueue_trial({}, user_attrs={**keys["m/a/0"], "key": "m/a/0"})
    first, second = gs.claim(study, keys), gs.claim(study, keys)
    assert gs.claim(study, keys) is None
    assert gs.is_duplicate(study, first) is None  # the lowest-numbered trial trains ...
    assert gs.is_duplicate(study, second) == first.number  # ... the other is closed without training
    gs.close(study, second, TrialState.FAIL, outcome="duplicate")
    assert gs.close(study, first, TrialState.COMPLETE, 20.0, outcome="ok")
    assert gs.enqueue_keys(study, keys) == {"finished": 1, "stale": 0, "enqueued": 0, "running": 0, "waiting": 0}
    # a stale RUNNING trial (no heartbeat for longer than the grace period) is failed and its key queued again
    study.enqueue_trial({}, user_attrs={"model": "m", "cell": "b", "seed": 0, "key": "m/b/0"})
    keys["m/b/0"] = {"model": "m", "cell": "b", "seed": 0}
    lost = gs.claim(study, keys)
    with gs.keep_alive(study, lost):
        time.sleep(0.2)
    assert gs.fail_stale(study) == []  # still fresh
    time.sleep(3.5)
    counts = gs.enqueue_keys(study, keys)
    assert counts["stale"] == 1 and counts["enqueued"] == 1 and counts["waiting"] == 1
    # a worker that comes back after being failed as stale cannot record its result
    assert gs.close(study, lost, TrialState.COMPLETE, 21.0) is False


def test_bad_storage_and_options_exit_2_before_training(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLORBENCH_RESULTS", str(tmp_path / "results"))  # no local tuning results
    out = tmp_path / "run"
    base = ["--grid", "tiny", "--seeds", "1", "--out", str(out), "--no-progress"]
    assert ablate.main([*base, "--storage", "postgresql+psycopg://someone:secret@127.0.0.1:1/nothing"]) == 2
    err = capsys.readouterr().err.strip()
    errors = [line for line in err.splitlines() if line.startswith("error:")]  # warnings (e.g. no FID net) may precede
    assert len(errors) == 1 and errors[0].startswith("error: cannot open") and "secret" not in err
    assert all(line.startswith(("error:", "warning:")) for line in err.splitlines())
    assert ablate.main([*base, "--heartbeat", "0"]) == 2
    assert capsys.readouterr().err.startswith("error: argument --heartbeat: must be from 1 to 3600")  # the bound
    assert ablate.main([*base, "--storage", str(tmp_path / "x.journal"), "--tuned"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --tuned: no tuning results") and "python -m bench.tune" in err
    assert not (out / "runs.csv").exists()


def test_tuned_cells_use_best_parameters(tmp_path, monkeypatch):
    from bench.tune import study_name

    monkeypatch.setenv("COLORBENCH_RESULTS", str(tmp_path / "results"))  # only the storage has tuning results

    journal = str(tmp_path / "shared.journal")
    storage = gs.open_storage(journal)
    best = {"mse": 3e-4, "l1": 7e-4, "huber": 1e-4}
    for loss, lr in best.items():  # finished tuning studies, as bench.tune leaves them
        st = optuna.create_study(study_name=study_name("unet_vgg16", loss, "quick", "kodak24-bundled"),
                                 storage=storage, direction="maximize")
        for value, x in ((20.0, lr * 3), (22.0, lr)):
            st.add_trial(optuna.trial.create_trial(
                params={"lr": x}, distributions={"lr": optuna.distributions.FloatDistribution(1e-5, 1e-2, log=True)},
                value=value))
    out = tmp_path / "run"
    argv = ["--grid", "tiny", "--seeds", "1", "--tuned", "--storage", journal, "--out", str(out), *FAST,
            "--steps", "1"]
    assert ablate.main(argv) == 0
    rows = {r["cell"]: r for r in read_rows(out / "runs.csv")}
    for cell in ("mse", "l1", "huber"):
        assert float(rows[cell]["lr"]) == pytest.approx(best[cell])
    assert float(rows["mse_lr"]["lr"]) == pytest.approx(2e-3)  # a cell's own lr wins over the tuned one


@pytest.mark.postgres
@pytest.mark.slow
def test_two_workers_split_grid_on_postgresql(tmp_path):
    if not PG_URL:
        pytest.skip("COLORBENCH_PG_URL is not set (.ci/run sets it and checks the server is reachable)")
    name = f"test-ablate-{uuid.uuid4().hex[:12]}"
    # two "machines": separate run folders, one shared PostgreSQL study
    outs = [tmp_path / "machine-a", tmp_path / "machine-b"]
    extra = ("--seeds", "1", "--storage", PG_URL, "--study-name", name)
    try:
        procs = [worker(o, *extra) for o in outs]
        for p in procs:
            finish(p)
        study = optuna.load_study(study_name=name, storage=gs.open_storage(PG_URL))
        keys = {k for k in TINY_KEYS if k.endswith("/0")}
        # every machine's leaderboard is built from the storage: each folder holds every run exactly once
        for o in outs:
            check_grid(study, o, keys)
    finally:
        with contextlib.suppress(KeyError):
            optuna.delete_study(study_name=name, storage=PG_URL)


@pytest.mark.postgres
def test_workers_opening_an_empty_postgresql_database_at_once(tmp_path):
    """Workers started together on a fresh database race to create Optuna's tables; every one must get in."""
    if not PG_URL:
        pytest.skip("COLORBENCH_PG_URL is not set (.ci/run sets it and checks the server is reachable)")
    import sqlalchemy as sa

    schema = f"cb_race_{uuid.uuid4().hex[:10]}"  # a fresh, empty namespace inside the test database
    engine = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with engine.connect() as c:
        c.execute(sa.text(f"CREATE SCHEMA {schema}"))
    url = f"{PG_URL}{'&' if '?' in PG_URL else '?'}options=-csearch_path%3D{schema}"
    code = "import sys; from bench.grid import study; study.open_storage(sys.argv[1], 1); print('ok')"
    try:
        procs = [subprocess.Popen([sys.executable, "-c", code, url], cwd=ROOT, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True) for _ in range(4)]
        outs = [p.communicate(timeout=120)[0] for p in procs]
        assert [p.returncode for p in procs] == [0] * 4, outs
    finally:
        with engine.connect() as c:
            c.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
        engine.dispose()
