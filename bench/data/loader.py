"""Training batches from disk in bounded memory: a streamed store, a ``DataLoader`` over the fixed crop stream, and
the RAM budget that chooses between streaming and decoding the set once into RAM.

Flow: a training set whose decoded pixels fit ``--cache-mb`` is decoded once into RAM
(``bench.data.sources.ImageStore``: the fast path of the CPU job). A larger one stays on disk (:class:`FileStore`):
``DataLoader`` workers decode, resize and crop each sample (:class:`CropStream`), with pinned memory and prefetching on
a GPU. Both paths cut the same crops from the same pixels (``bench.data.sources.CropSchedule``), so for one crop seed
they feed byte-identical batches, for any number of workers and from any step a resumed run starts at.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bench.data.controls import cache_root
from bench.data.sources import (
    UNREADABLE, CropSchedule, DataError, ImageStore, _decode, evenly_spaced, fingerprint_files, listing_hash,
    open_image, shorter_side_size)

#: Decoded images that ``FileStore.sample`` reads for the training set's statistics (mean colour, bin prior).
STAT_SAMPLE = 1000
#: Share of the available memory that the default ``--cache-mb`` lets a decoded training set take.
CACHE_SHARE = 0.25
#: Files whose headers :func:`estimate_mb` reads to estimate a set's decoded size.
ESTIMATE_SAMPLE = 64


def available_mb() -> float:
    """Memory available to new allocations, in MiB (``MemAvailable`` of /proc/meminfo; physical pages elsewhere)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (ValueError, OSError, AttributeError):
        return 4096.0


def default_cache_mb() -> int:
    """The default ``--cache-mb``: a quarter of the available memory (every worker of a machine holds its own)."""
    return int(available_mb() * CACHE_SHARE)


def estimate_mb(files: list[Path], size: int, sample: int = ESTIMATE_SAMPLE) -> float:
    """The decoded size in MiB of ``files`` at shorter side ``size``, from the headers of up to ``sample`` evenly
    spaced files (nothing is decoded)."""
    if not files:
        return 0.0
    picks = [files[i] for i in evenly_spaced(len(files), sample)]
    pixels = []
    for p in picks:
        try:
            with open_image(p) as im:
                w, h = im.size
        except UNREADABLE:
            continue
        nh, nw = shorter_side_size(h, w, size)
        pixels.append(nh * nw)
    per_image = float(np.mean(pixels)) if pixels else float(size * size)
    return len(files) * per_image * 3 / 2**20


#: The widest aspect ratio for which :func:`streams` trusts a set to fit without reading headers.
SURE_ASPECT = 16


def streams(files: list[Path], size: int, budget_mb: float) -> bool:
    """Whether a training set must be streamed: its decoded size at shorter side ``size`` exceeds ``budget_mb``.
    A set that fits even if every image were ``SURE_ASPECT``:1 is kept in RAM without a look at any file (so a
    small set's files are opened once, by the decode); otherwise :func:`estimate_mb` reads a sample of headers."""
    if len(files) * size * size * 3 * SURE_ASPECT / 2**20 <= budget_mb:
        return False
    return estimate_mb(files, size) > budget_mb


class FileStore:
    """Training images left on disk: image i is decoded (and resized) when it is cropped.

    It gives the pixels of :class:`bench.data.sources.ImageStore` for the same files, and keeps nothing but the file
    list.

    Args:
        files: image paths.
        size: shorter side after resizing.
    """

    def __init__(self, files: list[Path], size: int):
        if not files:
            raise DataError("no training images")
        self.files, self.size = list(files), size
        self.skipped: list[tuple[str, str]] = []  # filled by the loader as unusable files are met
        self._bad: set[int] = set()  # warned about in this process
        self._counted: set[int] = set()  # in ``skipped``

    def __len__(self) -> int:
        return len(self.files)

    def image(self, i: int) -> torch.Tensor | None:
        """Image i decoded at shorter side ``size``; None (warned once per process) when it cannot be used."""
        img, why = _decode(self.files[i], self.size)
        if img is None and i not in self._bad:
            self._bad.add(i)
            warnings.warn(f"skipping {self.files[i]}: {why}", stacklevel=2)
        return img

    def why(self, i: int) -> str:
        """Why file i cannot be used ('' if it can)."""
        return _decode(self.files[i], self.size)[1] or ""

    def sample(self, limit: int | None = STAT_SAMPLE) -> Iterator[torch.Tensor]:
        """Up to ``limit`` usable images, evenly spaced over the file list (the same ones on every run), decoded by
        threads a chunk at a time (memory stays bounded): the sample behind the training set's mean colour and bin
        prior."""
        picks = evenly_spaced(len(self.files), limit or len(self.files))
        found = 0
        with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
            for start in range(0, len(picks), 32):
                for img in pool.map(self.image, picks[start : start + 32]):
                    if img is not None:
                        found += 1
                        yield img
        if not found:
            raise DataError(f"none of {len(picks)} sampled training images can be decoded")


class CropStream(torch.utils.data.Dataset):
    """Sample p of the fixed crop stream (``CropSchedule.position``): its crop, its colour reference (an empty
    tensor when the model takes none) and the index of a file that had to be replaced (−1 if none).

    Args:
        schedule: the crop schedule of a (streamed or RAM) store.
        reference: None (no reference), ``"same"`` (a second view of the photo) or ``"other"`` (the next photo).
    """

    def __init__(self, schedule: CropSchedule, reference: str | None = None):
        self.schedule, self.reference = schedule, reference

    def __len__(self) -> int:
        return 2**62  # an endless stream: the sampler says which positions are read

    def __getitem__(self, p: int):
        i, e = self.schedule.position(int(p))
        crop, ref, used = self.schedule.sample_of(i, e, self.reference)  # the photo decoded once
        return crop, (torch.empty(0, dtype=torch.uint8) if ref is None else ref), (i if used != i else -1)


class _ShardPositions(torch.utils.data.Sampler):
    """Stream positions of rank r's shard of every batch from ``start`` on: samples k·B + r·B/N … k·B + (r+1)·B/N − 1
    (``bench.training.distributed.shard`` of the global batch)."""

    def __init__(self, start: int, steps: int, batch_size: int, part: tuple[int, int]):
        self.start, self.steps, self.batch_size, (self.r, self.n) = start, steps, batch_size, part
        self.per = batch_size // self.n

    def __iter__(self):
        for k in range(self.start, self.steps):
            first = k * self.batch_size + self.r * self.per
            yield from range(first, first + self.per)

    def __len__(self) -> int:
        return (self.steps - self.start) * self.per


def batches(schedule: CropSchedule, start: int, steps: int, batch_size: int, reference: str | None = None,
            workers: int = 0, pin: bool = False,
            part: tuple[int, int] = (0, 1)) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """The uint8 batches (and colour references, or None) of steps ``start`` … ``steps − 1``.

    A store in RAM is cut in this process (no copies, no worker start-up); a streamed store through a
    ``DataLoader`` with ``workers`` processes (0: in this process), pinned memory when ``pin``, and prefetching.
    Either way batch k holds samples k·B … k·B + B − 1 of the stream, so a resumed run (``start`` > 0) sees what
    it would have seen.

    Args:
        schedule: the crop schedule.
        start: the first step.
        steps: one past the last step.
        batch_size: images per step.
        reference: as in :class:`CropStream`.
        workers: ``DataLoader`` worker processes for a streamed store.
        pin: pin the batches' memory (for a CUDA device).
        part: (rank, number of ranks) of a data-parallel run: only this rank's contiguous slice of every global
            batch (``bench.training.distributed.shard``), decoded by this rank alone when streamed.
    """
    r, n = part
    if batch_size % n:
        raise ValueError(f"a global batch of {batch_size} does not split into {n} equal shards")
    per = batch_size // n
    if isinstance(schedule.store, ImageStore):
        for k in range(start, steps):
            u8 = schedule.batch(k, batch_size)[r * per : (r + 1) * per]
            ref = schedule.reference_batch(k, batch_size, reference == "other") if reference else None
            yield u8, (None if ref is None else ref[r * per : (r + 1) * per])
        return
    loader = torch.utils.data.DataLoader(
        CropStream(schedule, reference), batch_size=per, sampler=_ShardPositions(start, steps, batch_size, part),
        num_workers=workers, pin_memory=pin, prefetch_factor=4 if workers else None, drop_last=False)
    store = schedule.store
    for crop, ref, replaced in loader:
        for i in sorted({int(i) for i in replaced.tolist() if i >= 0} - store._counted):
            store._counted.add(i)  # met in this process or a worker: counted here, once
            store.skipped.append((str(store.files[i]), store.why(i)))
        yield crop, (ref if reference else None)


def fingerprints_of(files: list[Path], progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(fingerprint rows, readable) of ``files`` (``bench.data.sources.fingerprint_files``), computed once per listing
    and kept in ``<cache>/fingerprints/<listing_hash>.npz`` (``COLORBENCH_CACHE``, else ~/.cache/colorbench): a
    million files take 256 MB there, and their next run or evaluation reads them back in a second."""
    path = cache_root() / "fingerprints" / f"{listing_hash(files)}.npz"
    try:
        with np.load(path, allow_pickle=False) as z:
            if len(z["ok"]) == len(files):
                return z["rows"], z["ok"]
    except (OSError, KeyError, ValueError):
        pass  # not computed yet (or damaged): computed again
    rows, ok = fingerprint_files(files, progress)
    ok = np.array(ok, dtype=bool)
    with contextlib.suppress(OSError):  # a read-only cache: computed again next time
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".fp-", suffix=".npz")
        with os.fdopen(fd, "wb") as f:
            np.savez(f, rows=rows, ok=ok)
        os.replace(tmp, path)
    return rows, ok


class TrainFingerprints:
    """The fingerprints of a streamed training set, taken in a background thread while training starts (step 1
    waits for no full pass over the files); :meth:`result` waits for them.

    Args:
        files: the training files.
    """

    def __init__(self, files: list[Path]):
        self.files = list(files)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="fingerprints")
        self._future = self._pool.submit(fingerprints_of, self.files, False)

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """(rows, readable) of the training files (see :func:`fingerprints_of`)."""
        try:
            return self._future.result()
        finally:
            self._pool.shutdown(wait=False)


def default_workers() -> int:
    """``DataLoader`` workers of a streamed set when ``--loader-workers`` is not given: one per core but one
    (the training process keeps a core), at most 8; in one of N workers of ``--workers N``
    (``COLORBENCH_WORKER=<i>/<N> <pid>``, ``bench.grid.workers``), its share of those cores."""
    try:
        share = int(os.environ.get("COLORBENCH_WORKER", "").split()[0].split("/")[1])
    except (IndexError, ValueError):
        share = 1
    return max(1, min(8, ((os.cpu_count() or 2) - 1) // max(1, share)))


# Pillow is the decoder of both paths (``bench.data.sources.load_image``); say so where the loader's speed is reported.
DECODER = f"Pillow {Image.__version__}"
