"""The upper bounds of every numeric input that could hang a command or exhaust memory, in one place: the command
line's options and the configuration's fields are checked against them, and each error names its bound."""
from __future__ import annotations

#: side of the resized images and of the crops (``size``, ``crop``, ``eval_size``), in pixels
MAX_CROP = 1024
#: optimisation steps of a run (``steps``; also ``tune --warmup-steps``)
MAX_STEPS = 10_000_000
#: images per step (``batch_size``; also ``throughput --fp32-batch``)
MAX_BATCH_SIZE = 1024
#: a seed (``seed``, ``crop_seed``, the sampler and decoder seeds)
MAX_SEED = 2**32 - 1
#: training seeds per cell, folds, heartbeat seconds, trials of a tuning study (and its random start-up trials)
MAX_SEEDS, MAX_FOLDS, MAX_HEARTBEAT, MAX_TRIALS = 1000, 1000, 3600, 100_000
#: local worker processes of one command (``ablate --workers``)
MAX_WORKERS = 256
#: bootstrap resamples (``report --n-boot``)
MAX_BOOT = 1_000_000
#: images a command reads at most (``throughput --n-images``, ``styletransfer --eval-images``)
MAX_IMAGES = 10_000_000
#: untimed and timed calls of a throughput measurement (``--warmup``, ``--repeats``, ``--iters``)
MAX_TIMINGS = 100_000
#: RAM budget of a decoded training set (``--cache-mb``, MiB) and DataLoader workers (``--loader-workers``)
MAX_CACHE_MB, MAX_LOADER_WORKERS = 10**8, 256
