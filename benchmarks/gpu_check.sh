#!/usr/bin/env bash
# The prepared GPU check of issue 14, in one call: install what the GPU machine lacks from the carried wheels
# (.whl/, made here by benchmarks/fetch_wheels.sh), then run benchmarks/gpu_check.py, which writes everything under
# $OUT (or --out DIR). Arguments go to gpu_check.py: --tiny (CPU, under a minute), --budget SECONDS, --only STAGE...
#
#   COLORBENCH_GIT_COMMIT=<sha> benchmarks/gpu_check.sh          # on the GPU machine (the copy there has no .git)
#   benchmarks/gpu_check.sh --tiny --out /tmp/check               # here, on the CPU
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"

# Optuna and its dependencies are not in the GPU image: install the carried wheels into a private folder.
if ! "$PY" -c "import optuna" 2>/dev/null; then
  if ls .whl/*.whl >/dev/null 2>&1; then
    echo "[gpu_check] installing $(ls .whl/*.whl | wc -l) carried wheels into /tmp/site" >&2
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
  else
    echo "error: optuna is missing and no wheels were carried: run benchmarks/fetch_wheels.sh and carry .whl" >&2
    exit 2
  fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
exec "$PY" benchmarks/gpu_check.py "$@"
