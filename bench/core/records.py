"""Run records: the environment of a result, CSV files written atomically, without duplicate rows and validated
when read, one-line messages for failed writes (a full disk), and the redaction of secrets before anything is
printed or saved."""
from __future__ import annotations

import contextlib
import csv
import errno
import io
import json
import os
import platform
import re
import shlex
import socket
import subprocess
import sys
import tempfile
from functools import lru_cache
from importlib import metadata
from pathlib import Path

from bench.core import plugins
from bench.core.paths import SOURCE_ROOT

PACKAGES = ("torch", "torchvision", "torchmetrics", "optuna", "numpy", "pandas", "pillow")


class CorruptRecordError(RuntimeError):
    """A results file exists but cannot be read; it is never overwritten silently."""


#: The cell name of the greyscale baseline row (ab = 0) that every leaderboard has.
GREY = "grey"
#: The cell name of the mean-colour baseline: a constant ab, the mean ab of the training images' pixels (per fold).
MEAN_COLOUR = "mean_colour"
#: Rows that no network trained: never ranked as cells, never "the best".
BASELINES = (GREY, MEAN_COLOUR)
#: The oracle per-image tint: each test image's own mean ab at every pixel. It sees the answer (the test image's
#: mean colour), so it is a reference row, never ranked; a cell above it learned more than a tint per image.
ORACLE_TINT = "oracle_tint"
#: Prefix of the known-answer rows of the control data (``bench.data.controls``): each loss's Bayes-optimal prediction.
BAYES_PREFIX = "bayes:"


def is_untrained(cell) -> bool:
    """Whether a row's cell is a baseline or a reference row (oracle tint, Bayes rows): no network, never ranked."""
    cell = str(cell)
    return cell in BASELINES or cell == ORACLE_TINT or cell.startswith(BAYES_PREFIX)


def untrained_mask(cells):
    """:func:`is_untrained` of every entry of a pandas Series of cell names (a boolean Series)."""
    return cells.map(is_untrained).astype(bool)

#: Columns that a results file must have (by file name); a file without them (e.g. its header line deleted, so that
#: the first data row reads as the header) is reported as damaged instead of being read or rewritten.
REQUIRED_COLUMNS = {
    "runs.csv": ("model", "cell", "seed", "status"),
    "per_image.csv": ("model", "cell", "seed", "image", "psnr"),
    "history.csv": ("model", "cell", "seed", "step"),
}

#: The key columns of a row of ``runs.csv``, ``per_image.csv`` and ``history.csv``: a row whose key is already in the
#: file is not appended again. "fold" is empty in runs without k-fold rotation (and in files written before it
#: existed): the same keys as before.
RUN_KEY = ("model", "cell", "seed", "fold")
IMAGE_KEY = ("model", "cell", "seed", "fold", "image")
STEP_KEY = ("model", "cell", "seed", "fold", "step")

#: Width of what the commands print to a terminal (tables, listings); the files hold the full tables.
TERMINAL_WIDTH = 100

# ------------------------------------------------------------------------------------------------ secrets

_SCHEME = r"[A-Za-z][A-Za-z0-9+.\-]*://"
# scheme://user:PASSWORD@host — in one argument or URL the password runs from the first ":" after the user name to
# the LAST "@" (drivers disagree about an unescaped "@"; the widest reading is redacted), spaces included
_ARG_URL = re.compile(rf"(?P<head>\b{_SCHEME}[^\s:/@]*):(?P<secret>.*)@", re.DOTALL)
# in a message: a quoted URL ('...' as shlex.join quotes it, "..." in JSON) runs to the last "@" before its quote, an
# unquoted one to the last "@" before a blank
_QUOTED_URL = re.compile(rf"(?P<head>(?P<q>['\"]){_SCHEME}[^\s:/@'\"]*):[^'\"\n]*@")
_TEXT_URL = re.compile(rf"(?P<head>\b{_SCHEME}[^\s:/@]*):[^\s]*@")
# password=... parameters (URL queries, libpq key=value strings): to the next "&" in an argument, to a blank, quote
# or separator in a message
_KEY = r"(?i)(?P<key>\b\w*(?:password|passwd|pwd|secret|token))="
_ARG_PARAM = re.compile(_KEY + r"(?P<secret>[^&]*)")
_TEXT_PARAM = re.compile(_KEY + r"(?:'[^']*'|\"[^\"]*\"|[^&\s;'\"]*)")
#: Passwords seen in the command line (``note_secrets``): redacted wherever they or their pieces appear later, e.g.
#: in a driver's message that prints a host name made of half a password.
_SECRETS: set[str] = set()
#: Their pieces (split at blanks, ``@``, ``:``, ``/``...): redacted only as whole words, so that a piece such as
#: "with" of a password "pass with blanks" does not eat the middle of a file name like ``test_with_x``.
_PIECES: set[str] = set()


def _secrets_of(arg: str) -> list[str]:
    """The passwords in one command-line argument or URL, found by parsing it as ``_ARG_URL`` and ``_ARG_PARAM``."""
    found = [m.group("secret") for m in _ARG_URL.finditer(arg)] + [m.group("secret") for m in _ARG_PARAM.finditer(arg)]
    return [f for f in found if f and f != "***"]


def note_secrets(args) -> None:
    """Remember the passwords of these command-line arguments (URLs, ``password=`` parameters), whole, URL-decoded
    and in pieces (split at blanks, quotes, ``@``, ``:`` and ``/``), so that :func:`redact` removes them from any later text."""
    from urllib.parse import unquote

    for arg in args:
        for secret in _secrets_of(str(arg)):
            for whole in {secret, unquote(secret)}:
                _SECRETS.add(whole)
                _PIECES.update(p for p in re.split(r"[\s@:/?#&'\"]+", whole) if len(p) >= 2 and p != whole)


def redact(text, whole_argument: bool = False) -> str:
    """``text`` with every password of a URL (``scheme://user:pw@host``), of a ``password=`` parameter and of the
    command line (:func:`note_secrets`) replaced by ``***``: the one function applied to anything printed or saved
    that may hold a storage URL.

    Args:
        text: a URL, a message or a command line.
        whole_argument: ``text`` is one command-line argument or URL (a password may then hold blanks, ``@`` and
            ``/``); a text that starts with ``scheme://`` and has no line break is taken as one too.
    """
    text = str(text)
    whole = whole_argument or (re.match(rf"\s*{_SCHEME}\S", text) is not None and "\n" not in text)
    if whole:
        note_secrets([text])
    for secret in sorted(_SECRETS, key=len, reverse=True):
        if secret in text:
            text = (text.replace(secret, "***") if len(secret) >= 4 else
                    re.sub(rf"(?<![A-Za-z0-9]){re.escape(secret)}(?![A-Za-z0-9])", "***", text))
    for piece in sorted(_PIECES, key=len, reverse=True):
        if piece in text:
            text = re.sub(rf"(?<![\w.-]){re.escape(piece)}(?![\w.-])", "***", text)
    if whole:
        text = _ARG_URL.sub(lambda m: m.group("head") + ":***@", text)
        return _ARG_PARAM.sub(lambda m: m.group("key") + "=***", text)
    text = _QUOTED_URL.sub(lambda m: m.group("head") + ":***@", text)
    text = _TEXT_URL.sub(lambda m: m.group("head") + ":***@", text)
    return _TEXT_PARAM.sub(lambda m: m.group("key") + "=***", text)


def command_line(prog: str, argv: list[str]) -> str:
    """The command as it can be pasted into a shell (``shlex.join``), with secrets redacted."""
    return shlex.join([*prog.split(), *(redact(a, whole_argument=True) for a in argv)])


#: the copy of ``bench.ablate --config FILE`` in its run folder (the report shows it)
CONFIG_COPY = "config.yaml"

#: every command that wrote into a run folder (``bench.ablate``, ``bench.evaluate``), one per line, in order
COMMANDS_FILE = "commands.txt"


def record_command(run_dir: Path, command: str) -> None:
    """Add a command line to the run folder's ``commands.txt`` (once: a repeated command is not added again)."""
    path = Path(run_dir) / COMMANDS_FILE
    line = redact(command).replace("\n", " ")
    with locked(path):
        old = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
        if line not in old:
            atomic_write_text(path, "\n".join([*old, line]) + "\n")


# ------------------------------------------------------------------------------------------------ failed writes

def write_error_message(err: OSError, path=None) -> str:
    """One line for an ``OSError`` met while writing results (which file, why, what to do)."""
    where = err.filename or path or "a results file"
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return (f"no space left on the device while writing {where}; free some space, then run the same command "
                f"again (finished runs are kept; nothing half-written is left behind)")
    return f"cannot write {where}: {err.strerror or err}"


def git_commit() -> str:
    """The git commit of the results (with ``+dirty`` for uncommitted changes): of the repository the current
    folder is in (where the user runs colorbench), else of the package's own checkout, else ``unknown`` (e.g. an
    installed package run outside any repository).

    ``COLORBENCH_GIT_COMMIT``, when set, is taken as is: a copy of the tree without ``.git`` (a rented GPU machine,
    see benchmarks/gpu_check.sh) is told its commit that way.
    """
    if os.environ.get("COLORBENCH_GIT_COMMIT"):
        return os.environ["COLORBENCH_GIT_COMMIT"]
    for root in (Path.cwd(), SOURCE_ROOT):
        sha = _commit_of(str(root))
        if sha:
            return sha
    return "unknown"


@lru_cache(maxsize=8)
def _commit_of(root: str) -> str | None:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        if sha.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return sha.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def _cpuinfo() -> dict[str, str]:
    """``/proc/cpuinfo``'s fields (lower-case keys, in file order), each with its first non-empty value; empty
    where there is no such file."""
    info: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if value.strip():
                info.setdefault(key.strip().lower(), value.strip())
    except OSError:
        pass
    return info


def cpu_model() -> str:
    """The CPU's model name ("Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz"): ``/proc/cpuinfo`` on Linux, else what
    ``platform`` knows (at worst the architecture)."""
    return next((v for k, v in _cpuinfo().items() if k in ("model name", "cpu model", "hardware")),
                platform.processor() or platform.machine())


def cpu_signature() -> str:
    """What of the CPU decides a CPU run's floating-point results beyond its model name: the x86 family and model
    (``/proc/cpuinfo``; two "AMD EPYC" of different generations differ there) and the vector kernels torch picked
    (``AVX512``, ``AVX2``, ...). The same code, data and threads trained different networks on two such machines
    (results/default-job-cpu.md, runs 5–7 against 8–9)."""
    import torch

    info = _cpuinfo()
    where = (f"family {info['cpu family']} model {info['model']}" + (f" stepping {info['stepping']}"
             if "stepping" in info else "")) if "cpu family" in info and "model" in info else platform.machine()
    try:
        kernels = torch.backends.cpu.get_cpu_capability()
    except (AttributeError, RuntimeError):
        kernels = "unknown"
    return f"{where}; torch kernels {kernels}"


def device_name(device) -> str:
    """The GPU's name, or the CPU's model with architecture, cores and threads (runs on different CPU models
    must not share a throughput file)."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_model()} ({platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads)"


def device_slug(device: str, name: str | None = None) -> str:
    """File-name part for a device: the GPU's name (``nvidia-h100-80gb-hbm3``), or the CPU's model and core count
    (``cpu-intel-xeon-gold-6338-cpu-2-00ghz-8-cores``), so that two CPU models never share a file."""
    import torch

    dev = torch.device(device)
    name = name if name is not None else device_name(dev)
    if dev.type == "cpu":
        model = re.sub(r"\((r|tm)\)", "", name, flags=re.I).split(" (")[0]  # "Intel(R) Xeon(R) ..." → "Intel Xeon ..."
        cores = re.search(r"(\d+) cores", name)
        name = f"cpu-{model}" + (f"-{cores.group(1)}-cores" if cores else "")
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or dev.type


def colorbench_version() -> str:
    """colorbench's own version: of the checkout this code runs from (its ``pyproject.toml``), else of the
    installed package's metadata, else ``unknown``."""
    pyproject = SOURCE_ROOT / "pyproject.toml"
    try:
        text = pyproject.read_text(encoding="utf-8")
        if re.search(r'^name\s*=\s*"colorbench"', text, re.MULTILINE):
            found = re.search(r'^version\s*=\s*"([^"]+)"', text, re.MULTILINE)
            if found:
                return found.group(1)
    except OSError:
        pass
    try:
        return metadata.version("colorbench")
    except metadata.PackageNotFoundError:
        return "unknown"


def environment(device) -> dict:
    """colorbench's version and commit, library versions, device and host: what makes a result row
    reproducible."""
    import torch

    env = {"colorbench": colorbench_version()}
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
        # the CPU thread count changes results (float reduction order) and speed: runs that differ are not pooled
        torch_threads=torch.get_num_threads(),
        # so does the CPU itself on a CPU run (its generation and the kernels torch picks); a GPU run leaves it empty
        cpu=cpu_signature() if torch.device(device).type == "cpu" else "",
        # the losses, models and metrics added by plugins (bench.core.plugins): name==version, or a file's SHA-256
        plugins=plugins.describe(),
    )
    return env


def utc_now() -> str:
    """The time now, UTC, to the second (ISO 8601): every timestamp of the records."""
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def slug(text) -> str:
    """A file-name-safe form of a model, cell or data set name (for folders in a run folder)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).strip("_") or "_"


@contextlib.contextmanager
def locked(path: Path):
    """An exclusive advisory lock on ``path + '.lock'`` (serialises writers on one host)."""
    lock_path = Path(str(path) + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as fh:
        lock_file(fh)
        try:
            yield
        finally:
            unlock_file(fh)


def lock_file(fh) -> None:
    """Take an exclusive lock on an open file, waiting for it: ``fcntl.flock`` on POSIX, ``msvcrt.locking`` on
    Windows (imported here, so that importing this module works everywhere)."""
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        while True:
            try:
                fh.seek(0)
                msvcrt.locking(fh.fileno(), msvcrt.LK_LOCK, 1)  # retries for 10 s, then raises: wait on
                return
            except OSError:
                continue
    fcntl.flock(fh, fcntl.LOCK_EX)


def unlock_file(fh) -> None:
    """Release :func:`lock_file`."""
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        fh.seek(0)
        msvcrt.locking(fh.fileno(), msvcrt.LK_UNLCK, 1)
        return
    fcntl.flock(fh, fcntl.LOCK_UN)


def check_writable(folder) -> None:
    """Raise ``OSError`` (one line naming ``folder``) unless files can be created in ``folder``, or, while it does not
    exist, in its nearest existing parent: checked before any work, and nothing is left behind.

    Raises:
        OSError: a read-only, unwritable or full file system, or a parent that is not a folder.
    """
    folder = Path(folder)
    probe = folder
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    try:
        fd, tmp = tempfile.mkstemp(dir=probe, prefix=".colorbench-write-check.", suffix=".tmp")
        os.close(fd)
        os.unlink(tmp)
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise OSError(err.errno, err.strerror, str(folder)) from None
        raise OSError(err.errno, f"cannot write to {folder} ({err.strerror or err})") from None


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write a file through a temporary file in the same folder and a rename: never half-written. On a full disk
    the old file stays as it was and the ``OSError`` names ``path``."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; results are meant to be shared like any file
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        if isinstance(err, OSError) and err.errno and not err.filename:  # write() names no file: name the target
            raise OSError(err.errno, err.strerror, str(path)) from None
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write a text file atomically (see :func:`atomic_write_bytes`)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def read_rows(path: Path, required: tuple[str, ...] | None = None) -> list[dict]:
    """Rows of a CSV file (empty if it does not exist), validated: a damaged file raises ``CorruptRecordError``
    naming it.

    Args:
        path: the CSV file.
        required: columns the header must have (default: ``REQUIRED_COLUMNS`` for the file's name, e.g.
            ``runs.csv``); a header without them, with empty or repeated names, or a row with another number of
            fields than the header is damage.
    """
    path = Path(path)
    if not path.exists():
        return []
    if required is None:
        required = REQUIRED_COLUMNS.get(path.name, ())
    damaged = f"results file {path} is damaged"
    how = "move it away (the run's study still holds the finished runs) and run the command again"
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            rows = list(reader)
            fields = reader.fieldnames or []
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise CorruptRecordError(f"{damaged}: cannot be read ({err}); {how}") from None
    if path.stat().st_size and not fields:
        raise CorruptRecordError(f"{damaged}: it has no header; {how}")
    missing = [c for c in required if c not in fields]
    if missing or len(set(fields)) != len(fields) or any(not f.strip() for f in fields):
        why = f"columns {', '.join(missing)} missing" if missing else "empty or repeated column names"
        raise CorruptRecordError(f"{damaged}: its header ({why}) is not a {path.name} header; {how}")
    for i, row in enumerate(rows):
        if None in row or any(v is None for v in row.values()):
            raise CorruptRecordError(f"{damaged} at data row {i + 1} (wrong number of fields); {how}")
    return rows


def read_json(path: Path) -> dict:
    """A JSON object from a results file (``run.json``, ``best_params.json``); damage raises ``CorruptRecordError``
    naming the file."""
    path = Path(path)
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise CorruptRecordError(f"results file {path} is damaged: not valid JSON ({err})") from None
    if not isinstance(obj, dict):
        raise CorruptRecordError(f"results file {path} is damaged: a JSON object was expected, "
                                 f"found {type(obj).__name__}")
    return obj


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
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=fields, restval="")
        writer.writeheader()
        writer.writerows(old + new)
        atomic_write_text(path, buf.getvalue())
        return len(new)
