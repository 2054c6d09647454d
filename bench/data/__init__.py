"""Files → fixed-seed crops → Lab: sources and splits, stores and loaders, colour, ab bins, the control data.

Imports only ``bench.core``.

Modules:
    sources: image folders and named data sets → deterministic splits → decoded images → fixed-seed crops.
    loader: the streamed store and the ``DataLoader`` over the fixed crop stream, in bounded memory.
    pipeline: the CPU data pipeline, measured against the naive per-image loop.
    folds: k-fold runs seen as one run per seed.
    colour: sRGB ↔ CIE Lab in torch.
    abbins: the quantised ab space of the KL loss (bins, soft encoding, prior, annealed mean).
    controls: the known-answer control images.
"""

__all__ = ["abbins", "colour", "controls", "folds", "loader", "pipeline", "sources"]
