#!/bin/bash
# A SLURM array of colorbench workers on one PostgreSQL study: every array task runs the same command and the tasks
# split the grid (each run trained once; a task that dies has its run taken over after 3 × --heartbeat seconds).
# With GPUS_PER_TASK > 1 each task is itself a torchrun job: its GPUs train each of its runs data-parallel
# (batch_size stays the global batch; rank 0 claims and records). See the README, "Several GPUs and machines".
#
#   sbatch --array=0-7 examples/slurm_workers.sh                      # 8 workers, 1 GPU each
#   GPUS_PER_TASK=4 sbatch --array=0-1 --gres=gpu:4 examples/slurm_workers.sh   # 2 workers of 4 GPUs each
#
# Needs: the run folder (--out) on a file system that every node sees (checkpoints are resumed from it), and
# `pip install -e ".[postgres]"`. The database password goes in ~/.pgpass, not in this file.
#SBATCH --job-name=colorbench
#SBATCH --array=0-3
#SBATCH --nodes=1
#SBATCH --ntasks=1
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=8
#SBATCH --time=12:00:00
#SBATCH --output=logs/colorbench-%A_%a.out
set -euo pipefail

STORAGE=${STORAGE:-postgresql+psycopg://colorbench@db-host:5432/optuna}
OUT=${OUT:-$HOME/shared/results/losses-paper}     # one folder for all tasks (shared file system)
GPUS_PER_TASK=${GPUS_PER_TASK:-1}
ARGS=(ablate --grid losses --preset paper --data imagenet-sample --data-root "$HOME/shared/data"
      --storage "$STORAGE" --out "$OUT" --set checkpoint_every=1000 --no-progress)

export OMP_NUM_THREADS=$(( ${SLURM_CPUS_PER_TASK:-8} / GPUS_PER_TASK ))
if [ "$GPUS_PER_TASK" -gt 1 ]; then
    # one torchrun group per array task, on its own node: a free rendezvous port per task
    exec torchrun --standalone --nproc_per_node "$GPUS_PER_TASK" -m bench "${ARGS[@]}"
else
    exec colorbench "${ARGS[@]}"
fi
