"""Optuna storages and grids-as-studies: how many worker processes, on one machine or many, share one ablation grid.

Storage
    ``open_storage(url, heartbeat)`` accepts what Optuna accepts:

    * a file path (``results/<run>/study.journal``, the default): Optuna's ``JournalStorage`` on a
      ``JournalFileBackend``. This is the embedded default because several processes on one host may append to it at
      the same time: every write is one appended JSON line taken under a lock file, and every reader replays the
      log, so there is no database lock to wait for. SQLite, by contrast, locks the whole database for each write
      and makes concurrent workers fail with ``database is locked`` once trials report and heartbeat often.
    * an SQLAlchemy URL (``postgresql+psycopg://user@host/db``, ``mysql+pymysql://...``, ``sqlite:///file.db``):
      Optuna's ``RDBStorage``; PostgreSQL is the choice for many machines.
    * ``redis://...``: a ``JournalRedisBackend`` (needs the ``redis`` package).

Grid as a study
    Each (model, cell, seed) *key* of a grid is enqueued once as a ``WAITING`` trial carrying the key in its user
    attributes (``enqueue_keys``). Workers claim waiting trials with the storage's atomic ``WAITING → RUNNING``
    transition (``claim``), the same one ``Study.ask`` uses for queued trials, so two workers never run one trial.
    If two workers enqueue the same key at the same moment, ``is_duplicate`` keeps the lowest-numbered live trial
    of the key and the other one is closed as a duplicate without training. Optuna's ``GridSampler`` is not used:
    its documentation warns that concurrent workers occasionally evaluate the same grid point twice.

Faults
    From its claim to its close, a trial's worker records heartbeats (``keep_alive``): a ``colorbench:heartbeat``
    system attribute on every storage, and Optuna's own heartbeat as well on ``RDBStorage``
    (``heartbeat_interval``/``grace_period``, checked against the database server's clock). ``fail_stale`` marks a
    ``RUNNING`` trial as ``FAIL`` when its heartbeat is older than the grace period (Optuna's check on RDB storages,
    the local clock on journal storages) or, whatever the clocks say, when a ``StaleWatch`` of this worker has seen
    its heartbeat unchanged for longer than the grace period (this also catches a trial killed before its first
    heartbeat, which Optuna's check skips). The next sweep of ``enqueue_keys`` sees that the key has no live trial
    and enqueues it again (at most ``MAX_ATTEMPTS`` crashed attempts per key). A trial that diverges is closed as
    ``FAIL`` with ``outcome=diverged`` and its reason, and is not retried.
"""
from __future__ import annotations

import contextlib
import json
import os
import threading
import time
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState

# the one redaction function; bench.grid.study.redact is used by the CLIs
from bench.core.log import get_logger
from bench.core.records import redact  # noqa: F401
from bench.grid.optuna_compat import (
    UpdateFinishedTrialError, has_native_heartbeat, native_heartbeat, storage_of, trial_id, trial_of)

log = get_logger(__name__)

#: A key that crashed (heartbeat lost, unexpected error) this many times is given up and recorded as failed.
MAX_ATTEMPTS = 3
#: Outcomes (user attribute ``outcome``) of FAIL trials that do not count as crashed attempts.
NOT_A_CRASH = ("diverged", "duplicate", "interrupted")
HEARTBEAT_ATTR = "colorbench:heartbeat"
#: The writer's heartbeat interval (s): a trial is never stale before 3 of its own intervals.
EVERY_ATTR = "colorbench:heartbeat_every"

warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


class StorageError(ValueError):
    """The storage URL is malformed or the storage cannot be opened (reported in one line, exit code 2)."""


def check_journal(path: Path) -> str | None:
    """Check a journal file before it is opened; repair a half-written last line.

    Every journal write is one append of whole lines under the journal's lock, so a last line without its newline
    can only be the remains of an interrupted write (a full disk, a killed process): it never reached any reader
    and is cut off, under the same lock. Damage elsewhere cannot be repaired safely and raises ``StorageError``
    saying how to recover.

    Returns:
        a one-line note when the tail was repaired, else None.
    """
    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        return None
    from optuna.storages.journal import JournalFileSymlinkLock

    note = None
    lock = JournalFileSymlinkLock(str(path))
    lock.acquire()
    try:
        data = path.read_bytes()
        end = data.rfind(b"\n") + 1
        if end < len(data):
            os.truncate(path, end)
            note = (f"repaired {path}: removed its half-written last line ({len(data) - end} bytes, left by a full "
                    f"disk or a killed process)")
    finally:
        lock.release()
    lines = data[:end].split(b"\n")[:-1]
    for i, line in enumerate(lines):
        try:
            json.loads(line)
        except ValueError:
            raise StorageError(
                f"study journal {path} is damaged at line {i + 1} of {len(lines)}; to recover, keep the lines before "
                f"it: head -n {i} {path} > {path}.fixed && mv {path}.fixed {path} (trials recorded after it are "
                f"lost; bench.ablate imports the finished runs of runs.csv again)") from None
    return note


def open_storage(url: str | Path, heartbeat: int = 30, grace: int | None = None) -> BaseStorage:
    """Open (creating if needed) an Optuna storage with heartbeats.

    Args:
        url: a journal file path, an SQLAlchemy URL or a ``redis://`` URL (see the module docstring).
        heartbeat: seconds between the heartbeats of a running trial.
        grace: seconds without a heartbeat after which a running trial is stale (default ``3 * heartbeat``).

    Raises:
        StorageError: with a one-line message (password redacted) when the storage cannot be opened.
    """
    if heartbeat < 1:
        raise StorageError(f"--heartbeat must be at least 1 second, got {heartbeat}")
    grace = grace or 3 * heartbeat
    url = str(url)
    try:
        if url.startswith("redis://") or url.startswith("rediss://"):
            from optuna.storages.journal import JournalRedisBackend

            storage = JournalStorage(JournalRedisBackend(url))
        elif "://" in url:
            storage = _open_rdb(url, int(heartbeat), int(grace))
        else:
            path = Path(url).expanduser()
            path.parent.mkdir(parents=True, exist_ok=True)
            note = check_journal(path)
            if note:
                log.warning(note)
            storage = JournalStorage(JournalFileBackend(str(path)))
    except StorageError:
        raise
    except Exception as err:  # driver missing, server down, bad URL, unwritable folder ...
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise StorageError(redact(f"cannot open storage {url}: {type(err).__name__}: {first}")) from None
    storage.colorbench_heartbeat = (int(heartbeat), int(grace))  # for the journal heartbeat below
    return storage


def _open_rdb(url: str, heartbeat: int, grace: int, attempts: int = 6) -> RDBStorage:
    """``RDBStorage`` with heartbeats. Workers started together on an empty database race to create Optuna's tables
    (PostgreSQL then reports a unique violation on ``pg_type``): the losers wait a moment and open it again."""
    import random

    from sqlalchemy.exc import IntegrityError, ProgrammingError

    for attempt in range(attempts):
        try:
            with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna 5: that is known, stay quiet
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return RDBStorage(url, heartbeat_interval=heartbeat, grace_period=grace,
                                  engine_kwargs={"pool_pre_ping": True})
        except (IntegrityError, ProgrammingError):
            if attempt == attempts - 1:
                raise
            time.sleep(0.5 + random.random())
    raise AssertionError("unreachable")


# Optuna's private API is reached only through bench.grid.optuna_compat (the study's storage, storage-level trial ids);
# the rest of this module uses public Optuna API (BaseStorage's methods included).

def _settings(storage: BaseStorage) -> tuple[int, int]:
    """(heartbeat interval, grace period) in seconds, as ``open_storage`` set them."""
    found = getattr(storage, "colorbench_heartbeat", None)
    if found is None and has_native_heartbeat(storage):  # a Study wraps an RDBStorage in another object: ask it
        every = int(storage.get_heartbeat_interval())
        found = (every, 3 * every)
    return found or (30, 90)


@contextlib.contextmanager
def keep_alive(study: optuna.Study, trial: optuna.Trial, native: bool = True):
    """Record heartbeats of ``trial`` in background threads while the block runs: the ``colorbench:heartbeat``
    system attribute on every storage, and Optuna's own heartbeat on storages that have one.

    Args:
        study: the trial's study.
        trial: the running trial.
        native: also run Optuna's heartbeat for storages that have one; pass ``False`` inside
            ``Study.optimize``, which already runs it.
    """
    storage = storage_of(study)
    tid = trial_id(study, trial)  # the storage's attribute setters take the storage-level id
    interval, _ = _settings(storage)
    stop = threading.Event()

    def beat():
        with contextlib.suppress(Exception):
            storage.set_trial_system_attr(tid, EVERY_ATTR, interval)
        while True:
            try:
                storage.set_trial_system_attr(tid, HEARTBEAT_ATTR, time.time())
            except Exception:  # finished (or taken over) trial, or a transient I/O error: try again later
                pass
            if stop.wait(interval):
                return

    thread = threading.Thread(target=beat, name=f"heartbeat-{tid}", daemon=True)
    thread.start()
    try:
        if native:  # the heartbeat Study.optimize runs for RDB storages (claimed trials do not go through optimize)
            with native_heartbeat(storage, tid):
                yield
        else:
            yield
    finally:
        stop.set()
        thread.join()


class StaleWatch:
    """What one worker has seen of other workers' heartbeats, timed by its own monotonic clock (no clock of another
    machine is trusted): a ``RUNNING`` trial whose ``colorbench:heartbeat`` has not changed for longer than the
    grace period (at least 3 of the writer's intervals) is stale."""

    def __init__(self, grace: int):
        self.grace = grace
        self.seen: dict[int, tuple[object, float]] = {}  # trial number -> (heartbeat value, first seen at)
        self.running: list[tuple[str | None, float, float]] = []  # (key, silent for, grace) at the last sweep

    def stale(self, trials: list[FrozenTrial]) -> list[FrozenTrial]:
        """Record the heartbeats of ``trials`` (the ``RUNNING`` ones); return those silent for too long."""
        now, out, running = time.monotonic(), [], []
        for t in trials:
            value = t.system_attrs.get(HEARTBEAT_ATTR)
            prev = self.seen.get(t.number)
            if prev is None or prev[0] != value:
                self.seen[t.number] = prev = (value, now)
            silent = now - prev[1]
            grace = max(self.grace, 3 * float(t.system_attrs.get(EVERY_ATTR, 0) or 0))
            running.append((key_of(t), silent, grace))
            if silent > grace:
                out.append(t)
        self.running = running
        return out

    @classmethod
    def of(cls, study: optuna.Study) -> StaleWatch:
        """A watch with the grace period of ``study``'s storage (``open_storage``)."""
        return cls(_settings(storage_of(study))[1])

    def takeover_in(self) -> float | None:
        """Seconds until the first run seen at the last sweep is taken over unless its heartbeat changes."""
        return min((max(0.0, g - s) for _, s, g in self.running), default=None)


def fail_stale(study: optuna.Study, watch: StaleWatch | None = None) -> list[int]:
    """Mark ``RUNNING`` trials whose heartbeat stopped as ``FAIL``; return their numbers.

    Uses ``optuna.storages.fail_stale_trials`` where the storage has Optuna's heartbeat (the database server's
    clock), the ``colorbench:heartbeat`` attribute (or the start time, before the first heartbeat) and the local
    clock otherwise, and, with a ``watch``, any trial whose heartbeat that watch has seen unchanged for too long.
    """
    storage = storage_of(study)
    _, grace = _settings(storage)
    failed = []
    if has_native_heartbeat(storage):
        before = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        after = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
        failed += sorted(before - after - _finished_ok(study))
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    stale = watch.stale(running) if watch is not None else []
    if not has_native_heartbeat(storage):  # one host's clock wrote the journal's heartbeats: a dead trial goes at once
        now = time.time()
        for t in running:
            last = t.system_attrs.get(HEARTBEAT_ATTR)
            if last is None and t.datetime_start is not None:
                last = t.datetime_start.timestamp()
            if last is not None and now - float(last) > grace and t.number not in {u.number for u in stale}:
                stale.append(t)
    for t in stale:
        try:
            if storage.set_trial_state_values(trial_id(study, t), state=TrialState.FAIL):
                failed.append(t.number)
        except UpdateFinishedTrialError:
            pass  # finished meanwhile, or failed by another worker
    return sorted(failed)


def _finished_ok(study: optuna.Study) -> set[int]:
    return {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))}


# ---------------------------------------------------------------------------------------------------------------------
# Grid keys
# ---------------------------------------------------------------------------------------------------------------------

def key_of(trial: FrozenTrial | optuna.Trial) -> str | None:
    """The grid key (``model/cell/seed``) of a trial, or None for a trial that is not a grid trial."""
    return trial.user_attrs.get("key")


@dataclass
class KeyState:
    """What the storage knows about one grid key."""

    complete: list[FrozenTrial] = field(default_factory=list)
    diverged: list[FrozenTrial] = field(default_factory=list)
    live: list[FrozenTrial] = field(default_factory=list)  # WAITING or RUNNING
    crashes: list[FrozenTrial] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        """Completed, diverged (deterministic: not retried) or given up after ``MAX_ATTEMPTS`` crashes."""
        return bool(self.complete or self.diverged) or len(self.crashes) >= MAX_ATTEMPTS


def key_states(study: optuna.Study, keys=()) -> dict[str, KeyState]:
    """Group the study's grid trials by key (every key in ``keys`` is present, possibly empty)."""
    states: dict[str, KeyState] = defaultdict(KeyState)
    for k in keys:
        states[k] = KeyState()
    for t in study.get_trials(deepcopy=False):
        k = key_of(t)
        if k is None:
            continue
        s = states[k]
        if t.state == TrialState.COMPLETE:
            s.complete.append(t)
        elif t.state in (TrialState.WAITING, TrialState.RUNNING):
            s.live.append(t)
        elif t.user_attrs.get("outcome") == "diverged":
            s.diverged.append(t)
        elif t.state == TrialState.FAIL and t.user_attrs.get("outcome") not in NOT_A_CRASH:
            s.crashes.append(t)
    return states


def enqueue_keys(study: optuna.Study, keys: dict[str, dict], watch: StaleWatch | None = None) -> dict[str, int]:
    """Fail stale trials, then enqueue every key that is neither finished nor live. Safe to call from any worker.

    Args:
        study: the grid's study.
        keys: key → user attributes of its trials (``model``, ``cell``, ``seed``).
        watch: this worker's ``StaleWatch`` (kept between calls), see ``fail_stale``.

    Returns:
        counts: ``finished``, ``running``, ``waiting`` (after enqueueing), ``enqueued`` and ``stale``.
    """
    stale = fail_stale(study, watch)
    states = key_states(study, keys)
    enqueued = 0
    for k, attrs in keys.items():
        s = states[k]
        if not s.finished and not s.live:
            attempt = len(s.crashes) + 1
            params = {p: attrs[p] for p in KEY_PARAMS if p in attrs}
            study.enqueue_trial(params, user_attrs={**attrs, "key": k, "attempt": attempt})
            enqueued += 1
    states = key_states(study, keys)
    live = [t for k in keys for t in states[k].live]
    return {"finished": sum(states[k].finished for k in keys), "stale": len(stale), "enqueued": enqueued,
            "running": sum(t.state == TrialState.RUNNING for t in live),
            "waiting": sum(t.state == TrialState.WAITING for t in live)}


def claim(study: optuna.Study, keys=None) -> optuna.Trial | None:
    """Atomically take one ``WAITING`` grid trial (``WAITING → RUNNING``); None when there is none left.

    Only trials whose key is in ``keys`` (all grid trials when None) are taken, lowest number first.
    """
    storage = storage_of(study)
    for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        k = key_of(t)
        if k is None or (keys is not None and k not in keys):
            continue
        try:
            # the atomic WAITING → RUNNING transition (the one Study.ask uses for queued trials)
            if storage.set_trial_state_values(trial_id(study, t), state=TrialState.RUNNING):
                return trial_of(study, t)
        except UpdateFinishedTrialError:
            continue  # finished by another worker (e.g. closed as a duplicate) meanwhile
    return None


def is_duplicate(study: optuna.Study, trial: optuna.Trial) -> int | None:
    """The number of the trial that ``trial`` duplicates, or None if ``trial`` is the one to train.

    A trial is a duplicate if its key already completed (or diverged), or if a lower-numbered trial of the key is
    still live: of two concurrently enqueued copies, exactly the lowest-numbered one trains.
    """
    s = key_states(study).get(key_of(trial), KeyState())
    for t in s.complete + s.diverged:
        return t.number
    lower = [t.number for t in s.live if t.number < trial.number]
    return min(lower) if lower else None


def close(study: optuna.Study, trial: optuna.Trial, state: TrialState, value: float | None = None,
          records: dict[str, str] | None = None, **attrs) -> bool:
    """Set user attributes (and the run's ``records``, see :func:`record`) and finish ``trial``; False if it had
    been finished elsewhere (e.g. failed as stale)."""
    try:
        for k, v in (records or {}).items():
            # the storage's setter: Trial has no public setter for system attributes
            storage_of(study).set_trial_system_attr(trial_id(study, trial), RECORD_PREFIX + k, v)
        for k, v in attrs.items():
            trial.set_user_attr(k, v)
        if state == TrialState.COMPLETE:
            study.tell(trial, value)
        else:
            study.tell(trial, state=state)
        return True
    except UpdateFinishedTrialError:
        return False
    except ValueError as err:  # Study.tell: "Cannot tell a FAIL trial."
        if str(err).startswith("Cannot tell a"):
            return False
        raise


def open_study(name: str, url: str | Path, heartbeat: int = 30, sampler=None, pruner=None) -> optuna.Study:
    """Open (creating if needed) the maximising study ``name`` in the storage at ``url`` (:func:`open_storage`).

    Raises:
        StorageError: one line (password redacted) when the storage or the study cannot be opened.
    """
    storage = open_storage(url, heartbeat=heartbeat)
    try:
        return optuna.create_study(study_name=name, storage=storage, direction="maximize", load_if_exists=True,
                                   sampler=sampler, pruner=pruner)
    except Exception as err:  # e.g. the database refuses the connection
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise StorageError(f"cannot open study {name} in {redact(str(url))}: {type(err).__name__}: {first}") from None


#: A finished run's records (``row``, ``per_image``, ``history``: long JSON) are system attributes with this prefix,
#: shared through the storage by every worker but kept off the dashboard's trial page (which shows user attributes:
#: the test metrics); the dashboard gets them as a JSON artifact (``upload_json``).
RECORD_PREFIX = "colorbench:"


def record(trial: FrozenTrial, name: str) -> str | None:
    """A run record (``row``, ``per_image``, ``history``) of a finished trial: its system attribute, or the user
    attribute of studies written before records moved there."""
    return trial.system_attrs.get(RECORD_PREFIX + name, trial.user_attrs.get(name))


def dumps(obj) -> str:
    """Compact JSON for user attributes (NaN/inf allowed, as Python's json writes them)."""
    return json.dumps(obj, separators=(",", ":"), default=str)


def best_of(url: str, name: str) -> FrozenTrial | None:
    """The best finished trial of study ``name`` in the storage at ``url``; None if there is no such study, no
    finished trial, or the storage cannot be opened."""
    try:
        return optuna.load_study(study_name=name, storage=open_storage(url)).best_trial
    except (KeyError, ValueError):
        return None


# ---------------------------------------------------------------------------------------------------------------------
# What optuna-dashboard shows
# ---------------------------------------------------------------------------------------------------------------------

#: The objective of a grid or tuning study, as optuna-dashboard labels it.
OBJECTIVE = "val PSNR (dB)"


#: The parameters of a grid trial: its key (``fold`` only in k-fold runs)
KEY_PARAMS = ("model", "cell", "seed", "fold")


def key_distributions(keys: dict[str, dict]) -> dict[str, optuna.distributions.BaseDistribution]:
    """Distributions of a grid's key parameters: ``model`` and ``cell`` categorical over the grid's values,
    ``seed`` (and, with k-fold rotation, ``fold``) an integer range. The same for every trial of the study (Optuna
    refuses a parameter whose distribution changes between trials), so the dashboard can plot runs against model,
    cell, seed and fold (fold-to-fold spread is not credited to the cell)."""
    from optuna.distributions import CategoricalDistribution, IntDistribution

    values = list(keys.values())
    seeds = [int(a["seed"]) for a in values] or [0]
    out = {"model": CategoricalDistribution(list(dict.fromkeys(a["model"] for a in values)) or ["-"]),
           "cell": CategoricalDistribution(list(dict.fromkeys(a["cell"] for a in values)) or ["-"]),
           "seed": IntDistribution(min(seeds), max(seeds))}
    folds = [int(a["fold"]) for a in values if a.get("fold") not in (None, "")]
    if folds:
        out["fold"] = IntDistribution(min(folds), max(folds))
    return out


def set_key_params(study: optuna.Study, trial: optuna.Trial, attrs: dict,
                   distributions: dict[str, optuna.distributions.BaseDistribution]) -> bool:
    """Record a claimed grid trial's key (``model``, ``cell``, ``seed``) as its parameters; False if the study
    already holds these parameters with other distributions (a study shared by different plans)."""
    storage, tid = storage_of(study), trial_id(study, trial)
    try:
        for name, dist in distributions.items():
            # a claimed trial is not asked through the sampler, so its parameters are written directly
            storage.set_trial_param(tid, name, dist.to_internal_repr(attrs[name]), dist)
    except ValueError:
        return False
    return True


def describe(study: optuna.Study, **attrs) -> None:
    """Name the objective (``OBJECTIVE``) and set study user attributes (grid, preset, data, configuration ...)."""
    with warnings.catch_warnings():  # set_metric_names was experimental in Optuna 4
        warnings.simplefilter("ignore")
        study.set_metric_names([OBJECTIVE])
    for k, v in attrs.items():
        if study.user_attrs.get(k) != v:
            study.set_user_attr(k, v)


def artifact_store(folder: Path):
    """A file-system artifact store in ``folder`` (created), for sample images."""
    from optuna.artifacts import FileSystemArtifactStore

    folder.mkdir(parents=True, exist_ok=True)
    return FileSystemArtifactStore(str(folder))


def upload_json(store, trial: optuna.Trial, filename: str, text: str) -> bool:
    """Attach a JSON text to a running trial as the artifact ``filename``; False without an artifact store."""
    if store is None:
        return False
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / filename
        path.write_text(text, encoding="utf-8")
        return upload(store, trial, [path]) == 1


def upload(store, trial: optuna.Trial, files) -> int:
    """Attach files (e.g. sample PNGs) to a running trial as artifacts; returns how many were stored."""
    if store is None:
        return 0
    from optuna.artifacts import upload_artifact

    n = 0
    with warnings.catch_warnings():  # artifacts were experimental in Optuna 4
        warnings.simplefilter("ignore")
        for f in files:
            upload_artifact(artifact_store=store, file_path=str(f), study_or_trial=trial)
            n += 1
    return n
