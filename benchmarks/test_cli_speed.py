"""How long ``--help`` and ``--version`` take as a new process (pytest-benchmark suite, not part of the default test
run). The goal is under 2 s on the project's 2-core machine: the dispatcher and ``colorbench ablate`` import no
torch, Optuna or pandas before parsing (``tests/test_conventions.py`` checks the imports; this measures the time).

    pytest benchmarks/test_cli_speed.py --benchmark-only
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["ablate", "--help"]], ids=" ".join)
def test_colorbench_starts_fast(benchmark, argv):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def start():
        out = subprocess.run([sys.executable, "-m", "bench", *argv], cwd=ROOT, env=env, capture_output=True,
                             timeout=120)
        assert out.returncode == 0, out.stderr[-500:]

    benchmark.pedantic(start, rounds=5, warmup_rounds=1)
