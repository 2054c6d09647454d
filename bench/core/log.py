"""colorbench's diagnostics: the ``colorbench`` logger (children ``colorbench.<module>``), its stderr handler and
the log file of a run folder.

Results (leaderboards, the tables asked for, the paths of outputs) are printed on stdout; progress notes,
warnings, timings and resume notes go through this logger. On stderr a record is its message alone (a warning
starts ``warning:``, as the commands always printed them), at INFO unless ``-v`` (DEBUG) or ``-q`` (WARNING) said
otherwise (``bench.cli``); every run folder's ``colorbench.log`` gets each record, debugging notes included, with a
timestamp and the process id of the worker that wrote it (appended: several workers share one file). The records
of a process from before its run folder was known (the data's warnings, checked before the folder is created)
are kept and written first.

Imports nothing but the standard library (it is low in the layers: any module may log).
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path

ROOT_NAME = "colorbench"
#: the log file of every run folder
LOG_FILE = "colorbench.log"
#: what ``-v``/``-q`` choose on stderr: -1 quiet, 0 the default, 1 verbose
LEVELS = {-1: logging.WARNING, 0: logging.INFO, 1: logging.DEBUG}
FILE_FORMAT = "%(asctime)s pid %(process)d %(levelname)s %(name)s: %(message)s"
#: records kept for the first run folder's log file, at most
EARLY_RECORDS = 1000

_state: dict = {"verbosity": 0, "file": None}


class _Early(logging.Handler):
    """The records of a process before it writes a log file (the first ``EARLY_RECORDS``)."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if len(self.records) < EARLY_RECORDS:
            self.records.append(record)


def get_logger(name: str) -> logging.Logger:
    """The logger of a module: ``colorbench.<last part of the module name>`` (``bench.grid.engine`` →
    ``colorbench.engine``).

    Args:
        name: the module's ``__name__`` (or any dotted name).
    """
    _install()
    short = name.rsplit(".", 1)[-1]
    return logging.getLogger(ROOT_NAME if short in ("", "__main__", ROOT_NAME) else f"{ROOT_NAME}.{short}")


class _Short(logging.Formatter):
    """The stderr format: the message, after ``warning:``/``debug:`` for those levels (errors print their own)."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if record.levelno >= logging.ERROR:
            return f"error: {text}"
        if record.levelno >= logging.WARNING:
            return f"warning: {text}"
        return f"debug: {text}" if record.levelno < logging.INFO else text


class _Stderr(logging.StreamHandler):
    """A handler on whatever ``sys.stderr`` is when a record comes (tests swap it), through ``tqdm.write`` when tqdm
    is loaded so that a message does not break a progress bar."""

    def __init__(self):
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):  # StreamHandler sets it; the property always answers the current sys.stderr
        pass

    def emit(self, record: logging.LogRecord) -> None:
        tqdm = sys.modules.get("tqdm")
        if tqdm is None:
            return super().emit(record)
        try:
            tqdm.tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # noqa: BLE001 - logging never raises into the caller
            self.handleError(record)


def _install() -> logging.Logger:
    """The ``colorbench`` logger with its stderr handler (added once)."""
    root = logging.getLogger(ROOT_NAME)
    if not any(isinstance(h, _Stderr) for h in root.handlers):
        handler = _Stderr()
        handler.setFormatter(_Short("%(message)s"))
        handler.setLevel(LEVELS[_state["verbosity"]])
        root.addHandler(handler)
        root.addHandler(_Early())
        root.setLevel(logging.DEBUG)  # the handlers choose what they show
    return root


def set_verbosity(verbosity: int) -> None:
    """Choose what stderr shows: ``-v`` (1: DEBUG), the default (0: INFO) or ``-q`` (-1: WARNING).

    Args:
        verbosity: -1, 0 or 1 (values beyond are clipped).
    """
    _state["verbosity"] = max(-1, min(1, int(verbosity)))
    for h in _install().handlers:
        if isinstance(h, _Stderr):
            h.setLevel(LEVELS[_state["verbosity"]])


def attach_run_log(run_dir: str | Path) -> Path | None:
    """Append this process's records to ``<run_dir>/colorbench.log`` from now on (the folder must exist).

    A process writes to one run folder's log at a time: attaching another folder's detaches the first. Returns the
    file, or None when it cannot be opened (the run goes on without it).

    Args:
        run_dir: the run folder.
    """
    path = (Path(run_dir) / LOG_FILE).resolve()
    old = _state["file"]
    if old is not None and Path(old.baseFilename) == path:
        return path
    try:
        handler = logging.FileHandler(path, mode="a", encoding="utf-8")
    except OSError as err:
        get_logger(__name__).debug(f"no log file in {run_dir}: {err.strerror or err}")
        return None
    handler.setFormatter(logging.Formatter(FILE_FORMAT))
    detach_run_log()
    root = _install()
    for early in [h for h in root.handlers if isinstance(h, _Early)]:  # the first folder: what came before it
        root.removeHandler(early)
        for record in early.records:
            handler.handle(record)
    root.addHandler(handler)
    _state["file"] = handler
    return path


def detach_run_log() -> None:
    """Stop writing to the run folder's log file (closed)."""
    handler = _state["file"]
    if handler is not None:
        logging.getLogger(ROOT_NAME).removeHandler(handler)
        handler.close()
        _state["file"] = None
