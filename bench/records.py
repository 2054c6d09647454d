"""Run records: the environment of a result, and CSV files written atomically and without duplicate rows."""
from __future__ import annotations

import contextlib
import csv
import fcntl
import os
import platform
import re
import socket
import subprocess
import sys
import tempfile
from functools import lru_cache
from importlib import metadata
from pathlib import Path

import torch

PACKAGES = ("torch", "torchvision", "torchmetrics", "optuna", "numpy", "pandas", "pillow")


class CorruptRecordError(RuntimeError):
    """A results file exists but cannot be read; it is never overwritten silently."""


#: The cell name of the greyscale baseline row (ab = 0) that every leaderboard has.
GREY = "grey"


@lru_cache(maxsize=1)
def git_commit() -> str:
    """The project's git commit (with ``+dirty`` for uncommitted changes), or ``unknown`` outside a checkout.

    ``COLORBENCH_GIT_COMMIT``, when set, is taken as is: a copy of the tree without ``.git`` (a rented GPU machine,
    see benchmarks/gpu_check.sh) is told its commit that way.
    """
    if os.environ.get("COLORBENCH_GIT_COMMIT"):
        return os.environ["COLORBENCH_GIT_COMMIT"]
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        if sha.returncode != 0:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return sha.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def cpu_model() -> str:
    """The CPU's model name ("Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz"): ``/proc/cpuinfo`` on Linux, else what
    ``platform`` knows (at worst the architecture)."""
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip().lower() in ("model name", "cpu model", "hardware") and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: torch.device | str) -> str:
    """The GPU's name, or the CPU's model with architecture, cores and threads (runs on different CPU models
    must not share a throughput file)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_model()} ({platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads)"


def device_slug(device: str, name: str | None = None) -> str:
    """File-name part for a device: the GPU's name (``nvidia-h100-80gb-hbm3``), or the CPU's model and core count
    (``cpu-intel-xeon-gold-6338-cpu-2-00ghz-8-cores``), so that two CPU models never share a file."""
    dev = torch.device(device)
    name = name if name is not None else device_name(dev)
    if dev.type == "cpu":
        model = re.sub(r"\((r|tm)\)", "", name, flags=re.I).split(" (")[0]  # "Intel(R) Xeon(R) ..." → "Intel Xeon ..."
        cores = re.search(r"(\d+) cores", name)
        name = f"cpu-{model}" + (f"-{cores.group(1)}-cores" if cores else "")
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or dev.type


def environment(device: torch.device | str) -> dict:
    """Library versions, device, host and commit: what makes a result row reproducible."""
    env = {}
    for pkg in PACKAGES:
        try:
            env[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            env[pkg] = ""
    env.update(
        python=sys.version.split()[0],
        platform=platform.platform(),
        device=str(torch.device(device)),
        device_name=device_name(device),
        hostname=socket.gethostname(),
        git_commit=git_commit(),
    )
    return env


def slug(text) -> str:
    """A file-name-safe form of a model, cell or data set name (for folders in a run folder)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).strip("_") or "_"


@contextlib.contextmanager
def locked(path: Path):
    """An exclusive advisory lock on ``path + '.lock'`` (serialises writers on one host)."""
    lock_path = Path(str(path) + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def atomic_write_text(path: Path, text: str) -> None:
    """Write a file through a temporary file in the same folder and a rename: never half-written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; results are meant to be shared like any file
        with os.fdopen(fd, "w", newline="") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def read_rows(path: Path) -> list[dict]:
    """Rows of a CSV file (empty if it does not exist); a damaged file raises ``CorruptRecordError`` with its path."""
    path = Path(path)
    if not path.exists():
        return []
    try:
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh)
            rows = list(reader)
            fields = reader.fieldnames or []
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise CorruptRecordError(f"results file {path} cannot be read ({err}); move it away to start afresh") from None
    if path.stat().st_size and not fields:
        raise CorruptRecordError(f"results file {path} has no header; move it away to start afresh")
    for i, row in enumerate(rows):
        if None in row or any(v is None for v in row.values()):
            raise CorruptRecordError(f"results file {path} is damaged at data row {i + 1} (wrong number of fields)")
    return rows


def append_rows(path: Path, rows: list[dict], key: tuple[str, ...] | None = None) -> int:
    """Append rows to a CSV file atomically; rows whose ``key`` columns match an existing row replace nothing and
    are dropped. New columns extend the header. Returns how many rows were added."""
    path = Path(path)
    with locked(path):
        old = read_rows(path)
        seen = {tuple(str(r.get(k, "")) for k in key) for r in old} if key else set()
        new = []
        for r in rows:
            k = tuple(str(r.get(c, "")) for c in key) if key else None
            if key and k in seen:
                continue
            seen.add(k)
            new.append(r)
        if not new:  # nothing to add: never create a file without a header (it would read as damaged)
            return 0
        fields: list[str] = []
        for r in old + new:
            for f in r:
                if f not in fields:
                    fields.append(f)
        import io

        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=fields, restval="")
        writer.writeheader()
        writer.writerows(old + new)
        atomic_write_text(path, buf.getvalue())
        return len(new)
