"""Sample colorizations: a few fixed test images, saved per trained cell, and the labelled grid of the report.

Files in a run folder (all PNG, at the evaluation size)::

    samples/truth/<image>.png                      the ground truth (<image>: its key without the suffix)
    samples/grey/<image>.png                       the network's input: L only (ab = 0)
    samples/<model>/<cell>/seed<seed>/<image>.png  that run's colorization

The images are chosen by :func:`sample_indices` from the test set's sorted order, so every cell and every seed
shows the same photos.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bench.core.device import autocast
from bench.core.records import atomic_write_bytes, slug as _slug
from bench.data.colour import merge_lab, split_lab
from bench.data.sources import evenly_spaced
from bench.metrics.compute import colorize
from bench.reporting.plots import save_figure

N_SAMPLES = 4
#: images colorized at once by ``save_samples``
BATCH = 16


def sample_indices(n_test: int, n: int = N_SAMPLES) -> list[int]:
    """Indices of the sample images: ``n`` evenly spaced over the test set (all of them if it is smaller)."""
    return evenly_spaced(n_test, n)


def sample_name(key: str) -> str:
    """The name of an image's sample files: its key (path relative to the data root) without the file suffix."""
    return Path(str(key)).with_suffix("").as_posix()


def save_png(rgb: torch.Tensor, path: Path) -> None:
    """Save a ``3×H×W`` RGB tensor in [0, 1] as an 8-bit PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = _uint8(rgb)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())  # a full disk leaves no half-written PNG for the report to trip over


def cell_dir(run_dir: Path, model: str, cell: str, seed: int) -> Path:
    """Where one run's sample colorizations go."""
    return Path(run_dir) / "samples" / _slug(model) / _slug(cell) / f"seed{int(seed)}"


@torch.no_grad()
def save_samples(run_dir, model: str, cell: str, seed: int, prep, net, device="cpu", n: int | None = N_SAMPLES,
                 autocast_dtype: torch.dtype | None = None) -> list[Path]:
    """Colorize the fixed sample test images with a trained network and save them as PNGs.

    Call it once per finished (model, cell, seed), right after training, while the network is in memory.
    Ground truth and greyscale input are written too (once; later calls leave them alone).

    Args:
        run_dir: the run folder.
        model: the model's registered name (as in ``runs.csv``).
        cell: the cell name.
        seed: the training seed.
        prep: the run's :class:`bench.training.loop.Prepared` data (``test_images``, ``test_keys``), or any object with
            those two attributes.
        net: the trained network (e.g. ``train_cell(...)["model"]``); needs ``to_ab`` like every registered model.
        device: where the network lives.
        n: number of sample images (None: every test image).
        autocast_dtype: autocast dtype used in evaluation (e.g. ``torch.bfloat16`` on CUDA), or None.

    Returns:
        The colorization files written.
    """
    run_dir = Path(run_dir)
    idx = sample_indices(len(prep.test_images), len(prep.test_images) if n is None else n)
    out_dir = cell_dir(run_dir, model, cell, seed)
    written = []
    for i, rgb, grey, pred in _colorized(prep, net, device, idx, autocast_dtype):
        name = sample_name(prep.test_keys[i])
        for kind, img in (("truth", rgb), ("grey", grey)):
            p = run_dir / "samples" / kind / f"{name}.png"
            if not p.exists():
                save_png(img, p)
        save_png(pred, out_dir / f"{name}.png")
        written.append(out_dir / f"{name}.png")
    return written


@torch.no_grad()
def sample_arrays(prep, net, device="cpu", n: int = N_SAMPLES,
                  autocast_dtype: torch.dtype | None = None) -> list[tuple[str, np.ndarray]]:
    """The colorizations of the fixed sample test images as ``(name, H×W×3 uint8 array)``, nothing written (for the
    experiment trackers, ``bench.core.tracking``).

    Args:
        prep, net, device, autocast_dtype: as in :func:`save_samples`.
        n: number of sample images.
    """
    idx = sample_indices(len(prep.test_images), n)
    return [(sample_name(prep.test_keys[i]), _uint8(pred)) for i, _, _, pred in
            _colorized(prep, net, device, idx, autocast_dtype)]


def _uint8(rgb: torch.Tensor) -> np.ndarray:
    """A ``3×H×W`` RGB tensor in [0, 1] as an ``H×W×3`` uint8 array (as ``save_png`` writes it)."""
    return (rgb.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()


def _colorized(prep, net, device, idx: list[int], autocast_dtype):
    """Yield ``(index, truth, grey input, colorization)`` (``3×H×W`` RGB in [0, 1]) of the test images ``idx``,
    colorized ``BATCH`` at a time in evaluation mode (the network's mode restored after)."""
    was_training = net.training
    net.eval()
    try:
        for start in range(0, len(idx), BATCH):  # in batches: a large test set never sits in memory at once
            part = idx[start:start + BATCH]
            rgb = prep.test_images[part].to(device).float() / 255.0
            L, _ = split_lab(rgb)
            ref = rgb if getattr(net, "needs_reference", False) else None
            with torch.no_grad(), autocast(device, autocast_dtype):
                ab = colorize(net, L, ref)
            pred = merge_lab(L, ab.float())
            grey = merge_lab(L, torch.zeros_like(ab, dtype=torch.float32))
            for k, i in enumerate(part):
                yield i, rgb[k], grey[k], pred[k]
    finally:
        net.train(was_training)


def find_samples(run_dir) -> dict:
    """What ``samples/`` holds: ``{"images": [...], "cells": {(model, cell): {seed: folder}}}``; empty if nothing."""
    root = Path(run_dir) / "samples"
    truth = root / "truth"
    if not truth.is_dir():
        return {"images": [], "cells": {}}
    images = sorted(p.relative_to(truth).with_suffix("").as_posix() for p in truth.rglob("*.png"))
    cells: dict = {}
    for seed_dir in sorted(root.glob("*/*/seed*")):
        if seed_dir.parent.parent.name in ("truth", "grey") or not seed_dir.is_dir():
            continue
        model, cell = seed_dir.parent.parent.name, seed_dir.parent.name
        try:
            seed = int(seed_dir.name[4:])
        except ValueError:
            continue
        cells.setdefault((model, cell), {})[seed] = seed_dir
    return {"images": images, "cells": cells}


def grid_columns(folders: dict, order: list[tuple[str, str]] | None = None) -> list[tuple[str, tuple, Path]]:
    """The cell columns of the sample grid: ``(label, (model, cell, seed), folder)`` with the lowest seed.

    Args:
        folders: ``find_samples(...)["cells"]``: ``{(model_slug, cell_slug): {seed: folder}}``.
        order: (model, cell) names as in ``runs.csv``; matched to their folders through ``_slug``, so that the label
            is the cell's real name (``mse+adain_style``, not the folder's ``mse_adain_style``). Folders of cells
            not named follow, sorted, under their folder names.
    """
    named = {(_slug(m), _slug(c)) for m, c in (order or [])}
    keys = [(m, c) for m, c in (order or []) if (_slug(m), _slug(c)) in folders]
    keys += sorted(k for k in folders if k not in named)
    multi_model = len({m for m, _ in keys}) > 1
    out = []
    for model, cell in keys:
        seeds = folders[(_slug(model), _slug(cell))]
        seed = min(seeds)
        out.append((f"{model} / {cell}" if multi_model else cell, (model, cell, seed), seeds[seed]))
    return out


def plot_grid(run_dir, path, order: list[tuple[str, str]] | None = None, scores: dict | None = None,
              colours: dict | None = None) -> bool:
    """Draw the labelled sample grid: one row per sample image; grey input, each cell's colorization (its
    lowest seed), ground truth. Columns are titled with the cell names as the leaderboard writes them.

    Args:
        run_dir: the run folder with ``samples/``.
        path: the PNG to write.
        order: (model, cell) names, as in ``runs.csv``, in column order (e.g. the leaderboard's); their sample
            folders are found through the same slug ``save_samples`` used. Cells with samples but not in
            ``order`` follow, under their folder names. Default: sorted.
        scores: optional ``{(model, cell, seed, image_stem): psnr}`` (names as in ``runs.csv``) shown under each
            colorization.
        colours: optional ``{label: colour}`` for the column titles (the figures' palette).

    Returns:
        False (and nothing written) when the run folder has no samples.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    found = find_samples(run_dir)
    images, folders = found["images"], found["cells"]
    if not images or not folders:
        return False
    images = [images[i] for i in sample_indices(len(images))]  # a few rows; the report's gallery shows them all
    root = Path(run_dir) / "samples"
    cols = [("greyscale input", None, lambda s: root / "grey" / f"{s}.png", None)]
    for label, (model, cell, seed), folder in grid_columns(folders, order):
        cols.append((f"{label}\nseed {seed}", label, lambda s, d=folder: d / f"{s}.png", (model, cell, seed)))
    cols.append(("ground truth", None, lambda s: root / "truth" / f"{s}.png", None))
    width = max(1.9, 0.075 * max(len(c[0].split("\n")[0]) for c in cols))  # room for the longest title
    fig, axes = plt.subplots(len(images), len(cols), figsize=(width * len(cols), 2.1 * len(images)), squeeze=False)
    for r, stem in enumerate(images):
        for c, (title, label, file_of, key) in enumerate(cols):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            f = file_of(stem)
            if f.exists():
                ax.imshow(np.asarray(Image.open(f).convert("RGB")))
            if r == 0:
                ax.set_title(title, fontsize=8, color=(colours or {}).get(label, "black"))
            if c == 0:
                ax.set_ylabel(stem, fontsize=8)
            if key is not None and scores:
                v = scores.get((*key, stem))
                if v is not None:
                    ax.set_xlabel(f"{v:.2f} dB", fontsize=7)
    save_figure(fig, path, dpi=110)
    return True
