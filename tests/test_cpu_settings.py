"""Process-wide CPU settings for training speed: OpenMP threads sleep instead of spinning (set by ``import bench``
before torch loads), and glibc keeps freed memory (``bench.device.keep_freed_memory``)."""
from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from bench.device import keep_freed_memory

ROOT = Path(__file__).resolve().parents[1]
PRINT = "import os; print(os.environ.get('OMP_WAIT_POLICY'))"


def _policy(code: str, **env) -> str:
    clean = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], env={**clean, "PYTHONPATH": str(ROOT), **env},
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


@pytest.mark.parametrize("code,env,want", [
    (f"import bench; {PRINT}", {}, "PASSIVE"),                               # the default of every bench command
    (f"import bench; {PRINT}", {"OMP_WAIT_POLICY": "ACTIVE"}, "ACTIVE"),     # the user's setting wins
    (f"import torch, bench; {PRINT}", {}, "None"),                           # too late once torch is loaded: untouched
])
def test_import_bench_sets_the_openmp_wait_policy(code, env, want):
    assert _policy(code, **env) == want


def test_keep_freed_memory_applies_on_glibc():
    assert keep_freed_memory() is keep_freed_memory()  # once per process, the same answer
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert keep_freed_memory()
