"""Where results go: ``./results`` under the current directory unless ``--out`` or ``$COLORBENCH_RESULTS`` says
otherwise. Never a path inside the installed package."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

#: The ``bench`` package folder (its ``assets/`` hold the bundled Kodak24 copy).
PACKAGE_DIR = Path(__file__).resolve().parents[1]
#: The folder that holds ``bench/``, ``models/`` and ``losses/``: the checkout, or site-packages when installed.
SOURCE_ROOT = PACKAGE_DIR.parent

#: Environment variable that moves the default results folder.
RESULTS_ENV = "COLORBENCH_RESULTS"


def results_root() -> Path:
    """The folder that holds every run folder: ``$COLORBENCH_RESULTS`` if set, else ``./results``."""
    return Path(os.environ.get(RESULTS_ENV) or "results").expanduser()


def check_writable(path: Path) -> None:
    """Create ``path`` and write a probe file into it; ValueError with the reason if that fails."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        # A probe of its own: workers that start together on one folder must not delete each other's probe.
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise ValueError(f"output folder {path} is not writable ({err.strerror or err})") from None
