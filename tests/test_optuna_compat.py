"""The adapter to Optuna's missing public API (``bench.grid.optuna_compat``): each function on a journal storage and,
when ``COLORBENCH_PG_URL`` is set, on an RDB storage (PostgreSQL); and no other module of ours reaches past
Optuna's public API."""
from __future__ import annotations

import os
import re
import time
import types
import uuid
import warnings
from pathlib import Path

import optuna
import pytest
from optuna.storages import BaseStorage
from optuna.trial import TrialState

from bench.grid import optuna_compat as oc
from bench.grid import study as gs

ROOT = Path(__file__).resolve().parent.parent
PG_URL = os.environ.get("COLORBENCH_PG_URL")
BACKENDS = ["journal", pytest.param("postgresql", marks=pytest.mark.postgres)]


def _storage_url(backend: str, tmp_path: Path) -> str:
    if backend == "journal":
        return str(tmp_path / "study.journal")
    if not PG_URL:
        pytest.skip("COLORBENCH_PG_URL is not set (.ci/run sets it and checks the server is reachable)")
    return PG_URL


@pytest.fixture(params=BACKENDS)
def study(request, tmp_path) -> optuna.Study:
    """A fresh study (unique name) opened as the grid runs open theirs, with a 1-second heartbeat."""
    url = _storage_url(request.param, tmp_path)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(study_name=f"compat-{uuid.uuid4().hex[:12]}", direction="maximize",
                               storage=gs.open_storage(url, heartbeat=1, grace=2))


def _claimed(study: optuna.Study) -> optuna.Trial:
    study.enqueue_trial({}, user_attrs={"key": "m/c/0"})
    frozen = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))[-1]
    assert oc.storage_of(study).set_trial_state_values(oc.trial_id(study, frozen), state=TrialState.RUNNING)
    return oc.trial_of(study, frozen)


def test_storage_of_is_the_storage_the_study_writes_to(study):
    storage = oc.storage_of(study)
    assert isinstance(storage, BaseStorage)
    trial = study.ask()
    storage.set_trial_system_attr(oc.trial_id(study, trial), "colorbench:probe", 7)
    assert study.trials[-1].system_attrs["colorbench:probe"] == 7


def test_storage_of_without_the_private_attribute_is_one_clear_error():
    with pytest.raises(oc.OptunaCompatError, match=f"optuna {re.escape(optuna.__version__)}.*_storage"):
        oc.storage_of(types.SimpleNamespace())


def test_trial_id_of_running_and_frozen_trials_and_the_public_fallback(study):
    first, second = study.ask(), study.ask()
    for t in (first, second, *study.get_trials(deepcopy=False)):
        assert oc.trial_id(study, t) == oc.public_trial_id(study, t.number)
    assert oc.trial_id(study, first) != oc.trial_id(study, second)
    bare = types.SimpleNamespace(number=second.number)  # an Optuna without the private _trial_id
    assert oc.trial_id(study, bare) == oc.trial_id(study, second)


def test_trial_of_a_claimed_trial_is_a_live_trial(study):
    trial = _claimed(study)
    assert isinstance(trial, optuna.Trial) and trial.number == study.trials[-1].number
    assert trial.user_attrs["key"] == "m/c/0"
    trial.set_user_attr("outcome", "ok")
    study.tell(trial, 1.5)
    done = study.trials[-1]
    assert done.state == TrialState.COMPLETE and done.value == 1.5 and done.user_attrs["outcome"] == "ok"


def test_has_native_heartbeat(study):
    storage = oc.storage_of(study)
    is_journal = isinstance(storage, optuna.storages.JournalStorage)
    assert oc.has_native_heartbeat(storage) == (not is_journal), type(storage)  # RDB: opened with heartbeat_interval
    assert not oc.has_native_heartbeat(optuna.storages.InMemoryStorage())
    if not is_journal:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            plain = optuna.storages.RDBStorage(PG_URL)  # no heartbeat_interval: Optuna keeps none
        assert not oc.has_native_heartbeat(plain)


class _FakeHeartbeatStorage:
    """Counts record_heartbeat calls; a fast check of the loop on any Optuna."""

    def __init__(self, interval):
        self.interval, self.calls = interval, []

    def get_heartbeat_interval(self):
        return self.interval

    def record_heartbeat(self, trial_id):
        self.calls.append((trial_id, time.monotonic()))
        if len(self.calls) == 2:
            raise RuntimeError("a transient database error")  # does not end the loop


def test_native_heartbeat_beats_every_interval_until_the_block_ends():
    fake = _FakeHeartbeatStorage(0.05)
    with oc.native_heartbeat(fake, 42):
        time.sleep(0.3)
    n = len(fake.calls)
    assert n >= 3 and {t for t, _ in fake.calls} == {42}
    time.sleep(0.15)
    assert len(fake.calls) == n  # stopped with the block
    none = _FakeHeartbeatStorage(None)
    with oc.native_heartbeat(none, 1):
        time.sleep(0.05)
    assert none.calls == []


def test_native_heartbeat_keeps_a_claimed_trial_alive(study):
    """On RDB: a claimed trial inside the block is not stale for Optuna's check; once the block ends it goes stale
    after the grace period. On a journal storage the block does nothing (colorbench's own heartbeat serves it)."""
    trial = _claimed(study)
    storage = oc.storage_of(study)
    if not oc.has_native_heartbeat(storage):
        with oc.native_heartbeat(storage, oc.trial_id(study, trial)):
            pass
        assert study.trials[-1].state == TrialState.RUNNING
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        with oc.native_heartbeat(storage, oc.trial_id(study, trial)):
            time.sleep(3.5)
            optuna.storages.fail_stale_trials(study)
            assert study.trials[-1].state == TrialState.RUNNING
        time.sleep(3.5)
        optuna.storages.fail_stale_trials(study)
    assert study.trials[-1].state == TrialState.FAIL


#: Optuna's private API: private modules, private attributes of its objects, its private classes
PRIVATE = re.compile(r"(?:\boptuna(?:\.\w+)*\._\w+|\.(?:_storage|_trial_id|_study_id|_cached_frozen_trial)\b"
                     r"|_CachedStorage)")


def test_no_module_but_the_adapter_uses_optunas_private_api():
    found = []
    for folder in ("bench", "models", "losses"):
        for src in sorted((ROOT / folder).rglob("*.py")):
            if src.name == "optuna_compat.py":
                continue
            for i, line in enumerate(src.read_text().splitlines(), 1):
                code = line.split("#", 1)[0]
                if PRIVATE.search(code):
                    found.append(f"{src.relative_to(ROOT)}:{i}: {line.strip()}")
    assert not found, found
    assert PRIVATE.search("from optuna.storages._heartbeat import x") and PRIVATE.search("study._storage")


def test_update_finished_trial_error_is_what_the_storage_raises(study):
    trial = study.ask()
    study.tell(trial, 1.0)
    with pytest.raises(oc.UpdateFinishedTrialError):
        oc.storage_of(study).set_trial_state_values(oc.trial_id(study, trial), state=TrialState.FAIL)
    assert issubclass(oc.UpdateFinishedTrialError, RuntimeError)
