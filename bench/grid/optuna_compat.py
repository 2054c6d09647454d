"""The one place where colorbench reaches past Optuna's public API (issue 32, item 8).

A grid run claims ``WAITING`` trials itself and keeps their heartbeats itself, outside ``Study.optimize``, so it has
to talk to the study's storage with the storage-level trial id. Optuna has no public way to get either from a
``Study`` or a trial; each function below says what is missing, uses the private piece only where there is no
public route, and falls back to public calls where there is one (slower, but it keeps working if the private
attribute goes), and names what differs between the Optuna versions supported. Everything else in ``bench`` uses
public Optuna API or this module. Tested with Optuna 4.0.0 (the lower bound in ``pyproject.toml``) and 5.1.0
(``tests/test_optuna_compat.py``, ``tests/test_study.py``, ``tests/test_tune.py``).
"""
from __future__ import annotations

import contextlib
import threading

import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial


#: What a storage raises for an update of a finished trial: ``optuna.exceptions.UpdateFinishedTrialError`` from
#: Optuna 4.3; before it, a bare ``RuntimeError`` (the public class it derives from).
UpdateFinishedTrialError = getattr(optuna.exceptions, "UpdateFinishedTrialError", RuntimeError)


class OptunaCompatError(RuntimeError):
    """This Optuna lacks a private piece that colorbench needs and has no public replacement for."""


def storage_of(study: optuna.Study) -> BaseStorage:
    """The storage under ``study`` (for RDB storages Optuna's cached wrapper, the object the study itself writes to).

    Missing public API: a ``Study`` has no accessor for its storage (private ``Study._storage``), and the atomic
    ``WAITING → RUNNING`` claim and heartbeats outside ``Study.optimize`` must call the storage directly. Writing
    to the raw storage passed to ``create_study`` instead would bypass the wrapper's cache of an RDB storage.

    Args:
        study: an open study.

    Raises:
        OptunaCompatError: this Optuna's ``Study`` has no ``_storage``.
    """
    try:
        return study._storage
    except AttributeError:
        raise OptunaCompatError(f"optuna {optuna.__version__}: Study has no _storage, which colorbench's grid "
                                f"runs need; install an Optuna that colorbench supports") from None


def trial_id(study: optuna.Study, trial: optuna.Trial | FrozenTrial) -> int:
    """The storage-level id of ``trial`` (what ``BaseStorage.set_trial_*`` and ``record_heartbeat`` take).

    Missing public API: ``Trial`` and ``FrozenTrial`` expose only ``number``; the id is private (``_trial_id``).
    Without it, the public storage lookup by study name and trial number is used (two storage queries).

    Args:
        study: the trial's study.
        trial: a running trial or a frozen one.
    """
    found = getattr(trial, "_trial_id", None)
    return int(found) if found is not None else public_trial_id(study, trial.number)


def public_trial_id(study: optuna.Study, number: int) -> int:
    """The storage-level id of trial ``number`` of ``study`` through public ``BaseStorage`` calls only.

    Args:
        study: the study.
        number: the trial's number in the study.
    """
    storage = storage_of(study)
    return storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(study.study_name), number)


def trial_of(study: optuna.Study, trial: FrozenTrial) -> optuna.Trial:
    """A live ``Trial`` for ``trial`` (a frozen ``RUNNING`` trial this process has just claimed).

    Missing public API: ``Study.ask`` hands out queued trials itself, so a claimed trial is wrapped with the
    ``Trial(study, trial_id)`` constructor, whose id argument is storage-level (see :func:`trial_id`).

    Args:
        study: the trial's study.
        trial: the claimed trial.
    """
    return optuna.Trial(study, trial_id(study, trial))


def has_native_heartbeat(storage: BaseStorage) -> bool:
    """Whether Optuna keeps its own heartbeat for ``storage`` (an RDB storage opened with ``heartbeat_interval``).

    Missing public API: Optuna's query is private (``optuna.storages._heartbeat.is_heartbeat_enabled``); this asks
    the storage's public ``get_heartbeat_interval`` instead (journal storages have none).

    Args:
        storage: a storage, e.g. :func:`storage_of` a study.
    """
    interval = getattr(storage, "get_heartbeat_interval", None)
    return callable(interval) and interval() is not None


@contextlib.contextmanager
def native_heartbeat(storage: BaseStorage, trial_id: int):
    """Record Optuna's own heartbeat of a running trial every ``get_heartbeat_interval()`` seconds while the block
    runs (nothing for a storage without one, see :func:`has_native_heartbeat`).

    Missing public API: ``Study.optimize`` runs this thread itself (private
    ``optuna.storages._heartbeat.get_heartbeat_thread``); a claimed trial never goes through ``optimize``, so the
    same loop is run here with the storage's public ``record_heartbeat``.

    Args:
        storage: the trial's storage (:func:`storage_of`).
        trial_id: its storage-level id (:func:`trial_id`).
    """
    if not has_native_heartbeat(storage):
        yield
        return
    interval = float(storage.get_heartbeat_interval())
    stop = threading.Event()

    def beat() -> None:
        while True:
            with contextlib.suppress(Exception):  # a finished trial or a transient database error: try again later
                storage.record_heartbeat(trial_id)
            if stop.wait(interval):
                return

    thread = threading.Thread(target=beat, name=f"optuna-heartbeat-{trial_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
