"""Process-wide CPU settings for training speed: ``import bench`` leaves OpenMP's wait policy to the user (passive
waiting cost 30 % on the idle machine), and glibc keeps freed memory (``bench.core.device.keep_freed_memory``)."""
from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from bench.core.device import keep_freed_memory

ROOT = Path(__file__).resolve().parents[1]
PRINT = "import os; print(os.environ.get('OMP_WAIT_POLICY'))"


def _policy(code: str, **env) -> str:
    clean = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], env={**clean, "PYTHONPATH": str(ROOT), **env},
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


@pytest.mark.parametrize("code,env,want", [
    (f"import bench; {PRINT}", {}, "None"),                                  # not set by colorbench
    (f"import bench; {PRINT}", {"OMP_WAIT_POLICY": "PASSIVE"}, "PASSIVE"),   # the user's setting is kept
])
def test_import_bench_leaves_the_openmp_wait_policy_to_the_user(code, env, want):
    assert _policy(code, **env) == want


def test_keep_freed_memory_applies_on_glibc():
    assert keep_freed_memory() is keep_freed_memory()  # once per process, the same answer
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert keep_freed_memory()
