"""Training one cell: the loop (crops → Lab → model → loss → Adam → metrics), checkpoints, DDP.

Imports every stage below it (core, data, metrics, config, reporting's samples), ``models`` and ``losses``.

Modules:
    loop: ``train_cell`` and the one ``TrainStep``.
    checkpoint: final weights with their configuration, and training checkpoints to resume from.
    distributed: the process group under ``torchrun``, each rank's batch slice, DDP.
"""

__all__ = ["checkpoint", "distributed", "loop"]
