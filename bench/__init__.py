"""colorbench's harness.

Importing it checks first that ``models`` and ``losses`` are colorbench's own and that torch and torchvision match
(``bench.startup``). Imported before torch (as every ``python -m bench.*`` command is), it sets
``OMP_WAIT_POLICY=PASSIVE`` unless the environment says otherwise: OpenMP threads then sleep at the end of a parallel
region instead of spinning. On a loaded machine spinning threads wait for descheduled ones: a 2-thread quick-preset
step took 9× longer (``results/step-speed-cpu.md``). OpenMP reads the variable once, when torch loads it; it cannot
be changed later.
"""
import os
import sys

if "torch" not in sys.modules:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .startup import check as _check  # noqa: E402  (after the OpenMP setting, before anything imports torch)

_check()
