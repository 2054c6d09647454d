"""colorbench's harness.

Importing it checks first that ``models`` and ``losses`` are colorbench's own and that torch and torchvision match
(``bench.core.startup``). It leaves OpenMP's waiting as it is: ``OMP_WAIT_POLICY=PASSIVE`` made the main job 30 % slower
on the idle 2-core machine (650 s against 503 s with spinning threads, ``results/default-job-cpu.md``) although it
saves 9× on a machine with more runnable threads than cores (``results/step-speed-cpu.md``): set it in the
environment on a shared machine.
"""
from bench.core.startup import check as _check

_check()
