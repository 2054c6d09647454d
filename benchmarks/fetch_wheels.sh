#!/usr/bin/env bash
# Download, here (with a package registry), the wheels the GPU machine lacks into .whl/ (ignored by git), so that
# benchmarks/gpu_check.sh can install them there offline. The GPU image has Python 3.12, torch, torchvision,
# torchmetrics, numpy, scipy, pandas, matplotlib, seaborn, pillow, tqdm, tabulate and PyYAML; colorbench also needs
# Optuna and its dependencies. Versions are those the project is tested with here.
#
#   benchmarks/fetch_wheels.sh            # then carry .whl with the device call (see README, "GPU check")
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
WHEELS=(optuna==5.0.0 alembic==1.20.1 colorlog==6.12.0 Mako==1.4.3 SQLAlchemy==2.1.9)
mkdir -p .whl
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  platforms+=(--platform "$p")
done
"$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${platforms[@]}" -d .whl "${WHEELS[@]}"
ls -1 .whl
