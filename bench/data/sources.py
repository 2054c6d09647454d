"""Data: image folders and named data sets → deterministic splits → decoded once → fixed-seed crops.

Flow: files → ``load_image`` (orientation, mode, bit depth) → resized so the shorter side is ``size`` → kept as
uint8 tensors in RAM (``ImageStore``) → ``CropSchedule`` picks, for batch k, which images and which crops → a uint8
batch that the trainer moves to the device and converts to Lab there (``bench.data.colour``).

The crop and order of image i in epoch e depend only on (crop_seed, i, e): every cell of a grid, whatever its
model, loss or training seed, trains on byte-identical batches.
"""
from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from bench.core.paths import PACKAGE_DIR
from bench.data import controls
from bench.data.colour import rgb_to_lab

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp", ".bmp"}
#: named data sets: name → folder under the data root (``--data-root`` or ``BENCH_DATA``).
NAMED = {"imagenet-sample": "imagenet-sample-256", "kodak24": "kodak24", "cbsd68": "cbsd68"}
#: the test set used when a named training set has no test split of its own.
DEFAULT_TEST = {"imagenet-sample": "kodak24", "controls": "controls-test", "controls-varying": "controls-varying-test"}
BUNDLED = PACKAGE_DIR / "assets" / "kodak24"
MIN_SIDE = 16  # images whose shorter side is below this are skipped: upscaling them would invent the whole crop
#: Images with more pixels than this (read from the file's header, before anything is decoded) are skipped: a
#: 20000×20000 PNG of one colour is a few MB on disk and 1.2 GB decoded (a "decompression bomb").
MAX_PIXELS = 100_000_000
#: Validation images of a streamed training set (evenly spaced over its validation split): validation runs often
#: and in RAM, so it must not grow with the set (ImageNet's every-10th rule would give 128k).
VAL_LIMIT = 500

# Our own check (open_image) replaces PIL's, whose warning does not name the file and which would fire before ours.
Image.MAX_IMAGE_PIXELS = None


class DataError(ValueError):
    """A data set cannot be used (missing folder, no images, failed checksum, overlapping splits)."""


# ----------------------------------------------------------------------------------------------------- files


#: Suffixes of a file list given where a data folder is expected (``--data train.txt``).
LIST_EXTS = {".txt", ".csv", ".lst"}
#: Files of a file list checked to exist before anything else happens (all of a shorter list).
LIST_CHECK = 10_000


def read_file_list(path: Path) -> list[Path]:
    """The images of a file list: one path per line (``.txt``, ``.lst``) or the first column of a CSV file (a
    header whose first field is ``path``/``file``/``filename`` is skipped), relative to the list's folder unless
    absolute; blank lines and ``#`` comments are ignored. The order is the list's: the splits follow it."""
    import csv

    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"file list {path} cannot be read ({type(err).__name__}: {err})") from None
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if path.suffix.lower() == ".csv":
        rows = [r for r in csv.reader(lines) if r]
        if rows and rows[0][0].strip().lower() in ("path", "file", "filename", "image"):
            rows = rows[1:]
        names = [r[0].strip() for r in rows]
    else:
        names = [ln.strip() for ln in lines]
    base = str(path.parent)
    files = [Path(n if os.path.isabs(n) else os.path.join(base, n)) for n in names]  # str joins: 5× pathlib's
    if not files:
        raise DataError(f"file list {path} lists no images")
    # every file is checked in a list of up to LIST_CHECK; a longer one (ImageNet's 1.28 M) by an even sample, and
    # the loader replaces and counts a missing file that the sample did not meet
    picks = files if len(files) <= LIST_CHECK else [files[i] for i in range(0, len(files), len(files) // LIST_CHECK)]
    missing = [f for f in picks if not os.path.isfile(f)]
    if missing:
        raise DataError(f"{len(missing)} of the {len(picks)} files checked of {path} do not exist (first: {missing[0]})")
    return files


def key_root(source: Path) -> Path:
    """The folder a data source's image keys are relative to: the folder itself, or a file list's folder."""
    source = Path(source)
    return source.parent if source.is_file() else source


def list_images(folder: Path) -> list[Path]:
    """Image files below ``folder`` (recursive, by extension, sorted by relative path: an ImageFolder tree of class
    subfolders at any depth), or the files of a file list (:func:`read_file_list`, in its order)."""
    folder = Path(folder)
    if folder.is_file() and folder.suffix.lower() in LIST_EXTS:
        return read_file_list(folder)
    if not folder.is_dir():
        raise DataError(f"data folder {folder} does not exist or is not a folder")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTS and p.is_file())
    if not files:
        raise DataError(f"no images ({', '.join(sorted(IMAGE_EXTS))}) found under {folder}")
    return files


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def verify_manifest(folder: Path) -> int:
    """Check the images of ``folder`` against its ``SHA256SUMS``; returns how many were checked.

    Every listed image must exist with the listed hash, and every image present must be listed.
    """
    folder = Path(folder)
    manifest = folder / "SHA256SUMS"
    if not manifest.is_file():
        raise DataError(f"{folder} has no SHA256SUMS manifest")
    listed = {}
    for line in manifest.read_text().splitlines():
        if line.strip():
            digest, name = line.split(maxsplit=1)
            listed[name.strip().lstrip("*").removeprefix("./")] = digest
    images = {p.relative_to(folder).as_posix(): p for p in list_images(folder)}
    bad = [n for n, d in listed.items() if Path(n).suffix.lower() in IMAGE_EXTS and (n not in images or sha256(images[n]) != d)]
    extra = [n for n in images if n not in listed]
    if bad or extra:
        raise DataError(
            f"{folder} does not match its SHA256SUMS: {len(bad)} missing or changed (e.g. {bad[:3]}), "
            f"{len(extra)} not listed (e.g. {extra[:3]})"
        )
    return len(images)


def data_root(arg: str | os.PathLike | None = None) -> Path | None:
    """The folder holding the named data sets: ``--data-root``, else ``BENCH_DATA``, else none."""
    root = arg or os.environ.get("BENCH_DATA")
    return Path(root).expanduser() if root else None


def resolve(name_or_path: str | None, root: Path | None) -> tuple[str, Path, bool]:
    """Turn a data argument into (display name, folder, is_named).

    ``None`` means the bundled, downscaled Kodak24 (offline default); a named set needs a data root, except
    ``kodak24`` which falls back to the bundled copy.
    """
    if name_or_path in (None, "", "default"):
        return "kodak24-bundled", BUNDLED, True
    control = controls.split_of(name_or_path)
    if control is not None:  # generated by colorbench itself (bench.data.controls), into its cache on first use
        return name_or_path, controls.ensure(control[0]) / control[1], True
    if name_or_path in NAMED:
        if root is None:
            if name_or_path == "kodak24":
                return "kodak24-bundled", BUNDLED, True
            raise DataError(
                f"data set {name_or_path!r} is looked up under --data-root or BENCH_DATA, and neither is set "
                f"(named sets: {', '.join(NAMED)}; or pass a folder of images)"
            )
        folder = root / NAMED[name_or_path]
        if not folder.is_dir():
            raise DataError(f"data set {name_or_path!r} not found: {folder} does not exist")
        return name_or_path, folder, True
    folder = Path(name_or_path).expanduser()
    if folder.is_file() and folder.suffix.lower() in LIST_EXTS:  # a file list: named after the list
        return folder.stem, folder, False
    if not folder.is_dir():
        raise DataError(
            f"unknown data set {name_or_path!r}: not a named set ({', '.join(NAMED)}), not an existing folder and "
            f"not a file list ({', '.join(sorted(LIST_EXTS))})"
        )
    return folder.name, folder, False


def image_key(path, root=None) -> str:
    """An image's key in result files: its path relative to its data root, with ``/`` separators (two ``x.png`` in
    different subfolders are different images); the file name if it lies outside ``root`` or there is none."""
    path = Path(path)
    if root is not None:
        try:
            return Path(os.path.abspath(path)).relative_to(os.path.abspath(root)).as_posix()
        except ValueError:
            pass
    return path.name


# ----------------------------------------------------------------------------------------------------- splits


class TooLargeError(ValueError):
    """An image whose header declares more than ``MAX_PIXELS`` pixels (never decoded)."""


def open_image(path: Path) -> Image.Image:
    """``Image.open`` plus the pixel-count check of ``MAX_PIXELS`` (from the header: nothing is decoded yet)."""
    im = Image.open(path)
    w, h = im.size
    if w * h > MAX_PIXELS:
        im.close()
        raise TooLargeError(f"too large ({w}x{h} = {w * h / 1e6:.0f} MP; the limit is {MAX_PIXELS / 1e6:.0f} MP)")
    return im


UNREADABLE = (OSError, ValueError, UnidentifiedImageError, Image.DecompressionBombError, SyntaxError)


def _why(err: Exception) -> str:
    if isinstance(err, TooLargeError):
        return str(err)
    return f"unreadable ({type(err).__name__}: {str(err)[:80]})"


def probe_image(path: Path) -> str | None:
    """Why ``path`` cannot be used (None if it can): more than ``MAX_PIXELS`` pixels (from the header), or the
    image cannot be fully decoded (JPEGs at 1/8 scale in the DCT domain, which still reads every byte, so truncation
    is caught), or its shorter side is under ``MIN_SIDE``. Used when no decoding size is known; otherwise
    :func:`decode_files` probes and decodes in one pass."""
    try:
        with open_image(path) as im:
            w, h = im.size
            if min(w, h) < MIN_SIDE:
                return f"too small ({w}x{h}, shorter side < {MIN_SIDE})"
            if im.format == "JPEG":
                im.draft(None, (max(1, w // 8), max(1, h // 8)))
            im.load()
    except UNREADABLE as err:
        return _why(err)
    return None


#: Set (to anything) by ``--workers`` for its workers: decoded sets go through :func:`shared_decode`.
SHARED_CACHE_ENV = "COLORBENCH_SHARED_CACHE"


def decode_files(files: list[Path], size: int) -> dict[Path, tuple[torch.Tensor | None, str | None]]:
    """Decode every file once at shorter side ``size``: path → (uint8 ``3×H×W`` tensor, None) or (None, why it
    cannot be used). The result serves both as the probe of :func:`make_splits` and as the pixels of
    :class:`ImageStore`, so no file is decoded twice. With ``COLORBENCH_SHARED_CACHE`` set, the workers of one
    machine share one decoded copy (:func:`shared_decode`)."""
    if os.environ.get(SHARED_CACHE_ENV):
        return shared_decode(files, size)
    return _decode_all(files, size)


def _decode_all(files: list[Path], size: int) -> dict[Path, tuple[torch.Tensor | None, str | None]]:
    with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
        return dict(zip(files, pool.map(lambda p: _decode(p, size), files)))


def listing_hash(files: list[Path]) -> str:
    """SHA-1 of a listing: every file's absolute path, size and modification time, in order (a changed, added or
    removed file changes it; no file is read)."""
    h = hashlib.sha1()
    for path in files:
        try:
            st = os.stat(path)
            h.update(f"{os.path.abspath(path)}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{os.path.abspath(path)}\tmissing\n".encode())
    return h.hexdigest()


def shared_decode(files: list[Path], size: int) -> dict[Path, tuple[torch.Tensor | None, str | None]]:
    """:func:`decode_files` through one uint8 file per (listing, size) in ``<cache>/decoded/``, written once by
    the first worker (the others wait on its lock) and memory-mapped by every worker: the pages are the page
    cache's, shared by the workers of a machine, and nothing is decoded twice. Copy-on-write: a worker that wrote
    to its images would change only its own copy."""
    from bench.core.records import atomic_write_text, locked

    base = controls.cache_root() / "decoded" / f"{listing_hash(files)}-{size}"
    index, pixels = base.with_suffix(".json"), base.with_suffix(".u8")
    with locked(base):
        if not index.is_file():
            out = _decode_all(files, size)
            entries, offset, tmp = [], 0, pixels.with_name(pixels.name + ".tmp")
            with open(tmp, "wb") as fh:
                for p in files:
                    img, why = out[p]
                    entries.append({"why": why} if img is None else {"shape": list(img.shape), "offset": offset})
                    if img is not None:
                        fh.write(img.numpy().tobytes())
                        offset += img.numel()
            os.replace(tmp, pixels)
            atomic_write_text(index, json.dumps({"files": [str(p) for p in files], "entries": entries}))
            return out
    entries = json.loads(index.read_text())["entries"]
    mm = np.memmap(pixels, dtype=np.uint8, mode="c") if pixels.stat().st_size else np.zeros(0, np.uint8)
    out = {}
    for p, e in zip(files, entries):
        if "shape" in e:
            n = int(np.prod(e["shape"]))
            out[p] = (torch.from_numpy(mm[e["offset"] : e["offset"] + n].reshape(e["shape"])), None)
        else:
            out[p] = (None, e["why"])
    return out


def partition_usable(files: list[Path], decoded: dict | None = None) -> tuple[list[Path], list[Path]]:
    """(usable files, unusable files) in the given order: by ``decoded`` (from :func:`decode_files`) when given,
    else by :func:`probe_image`."""
    if decoded is not None:
        why = [decoded[p][1] for p in files]
    else:
        with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
            why = list(pool.map(probe_image, files))
    return [p for p, w in zip(files, why) if w is None], [p for p, w in zip(files, why) if w is not None]


@dataclass
class Splits:
    """File lists of a benchmark: train, validation and held-out test."""

    train: list[Path]
    val: list[Path]
    test: list[Path]
    names: dict[str, str] = field(default_factory=dict)  # split → data set name
    roots: dict[str, Path] = field(default_factory=dict)  # split → the folder its files are keyed relative to
    #: path → (decoded tensor or None, why unusable or None), when make_splits was given a size (see decode_files)
    decoded: dict = field(default_factory=dict, repr=False)
    #: path → content fingerprint, filled by :meth:`check_disjoint` (the folds of one data set share one)
    content: dict = field(default_factory=dict, repr=False)

    def key(self, split: str, path) -> str:
        """The key of one of a split's images in result files (see :func:`image_key`)."""
        return image_key(path, self.roots.get(split))

    def check_disjoint(self, train: bool = True) -> None:
        """Raise if two of train, validation and test show the same photo, by content (:func:`fingerprint`, any
        size or encoding: a copy under another name, in another format or at another size is caught). The pixels
        of ``decoded`` are used where there are some; other files are decoded once, small, and only their
        fingerprints are kept. ``train=False``: validation against test only (a streamed training set)."""
        names = ("train", "val", "test") if train else ("val", "test")
        fps = {split: self._fingerprints(getattr(self, split)) for split in names}
        label = {"train": "training", "val": "validation", "test": "test"}
        for a, b in (("train", "val"), ("train", "test"), ("val", "test"))[0 if train else 2:]:
            clash = same_content([fp for _, fp in fps[b]], [fp for _, fp in fps[a]])
            if clash:
                i, j = clash[0]
                raise DataError(f"{len(clash)} {b} image(s) also in the {label[a]} set (same content at any size or "
                                f"encoding), e.g. {fps[b][i][0]} = {fps[a][j][0]}: the splits must be disjoint")

    def _fingerprints(self, files: list[Path]) -> list[tuple[Path, str]]:
        """(file, fingerprint) of every file that decodes (from ``decoded`` when it holds the file), cached in
        ``content``."""

        def one(p):
            img = self.decoded[p][0] if p in self.decoded else _decode(p, FINGERPRINT_DECODE)[0]
            return None if img is None else fingerprint(img)

        todo = [p for p in files if p not in self.content]
        with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
            self.content.update(zip(todo, pool.map(one, todo)))
        return [(p, self.content[p]) for p in files if self.content[p] is not None]


def evenly_spaced(n: int, k: int) -> list[int]:
    """``min(k, n)`` distinct indices spread evenly over ``range(n)``, first and last included (all of them when
    ``k ≥ n``)."""
    if k >= n:
        return list(range(n))
    return [int(i) for i in np.linspace(0, n - 1, k).round()]  # steps ≥ 1: the rounded values stay distinct


def _source(folder: Path, verify: bool, size: int | None, files: list[Path] | None = None,
            probe: bool = True) -> tuple[list[Path], list[Path], dict | None]:
    """(usable files, unusable files, :func:`decode_files` at ``size`` or None) of a data folder or file list:
    listed (unless ``files`` are given), checked against its manifest when ``verify``, decoded or probed once;
    ``probe=False`` takes every listed file as usable (a streamed training set)."""
    files = list_images(folder) if files is None else files
    if verify:
        verify_manifest(folder)
    decoded = decode_files(files, size) if size else None
    usable, bad = partition_usable(files, decoded) if probe else (files, [])
    return usable, bad, decoded


def split_files(files: list[Path], val_every: int, test_every: int | None) -> tuple[list, list, list]:
    """Deterministic split on the sorted file list: position i goes to test if i % test_every == test_every - 1,
    else to validation if i % val_every == 0, else to training."""
    train, val, test = [], [], []
    for i, p in enumerate(files):
        if test_every and i % test_every == test_every - 1:
            test.append(p)
        elif i % val_every == 0:
            val.append(p)
        else:
            train.append(p)
    return train, val, test


def make_splits(data: str | None = None, test: str | None = None, root: str | Path | None = None, verify: bool = True,
                size: int | None = None, stream: bool = False, files: list[Path] | None = None) -> Splits:
    """Build the train/val/test file lists.

    Args:
        data: a named set (``imagenet-sample``, ``kodak24``, ``cbsd68``), a folder, or None for the bundled Kodak24.
        test: the held-out test set (named or folder); by default the named set's usual test set
            (``imagenet-sample`` → ``kodak24``), otherwise a split of ``data`` itself.
        root: the folder holding the named sets (default: ``BENCH_DATA``).
        verify: check named sets against their SHA256 manifests.
        size: decode every file once at this shorter side while probing it (kept in ``Splits.decoded`` for
            :class:`ImageStore`); without it, files are probed by :func:`probe_image`.
        stream: a training set too large to decode before step 1 (``bench.data.loader``): its files are neither probed
            nor decoded here (the loader replaces and counts an unusable one when it meets it), the validation
            split is cut to ``VAL_LIMIT`` evenly spaced images, and the content check covers validation against
            test only (``bench.evaluate`` checks a test set against every training image).
        files: the files of ``data`` when the caller has listed them already (``list_images``).

    Rules: with a separate test set, every 10th file (sorted) goes to validation (imagenet-sample: 876/98).
    Without one, a folder of ≥ 40 images gives 80/10/10; a smaller one (the bundled Kodak24) every 4th to test and
    one in 8 to validation (24 → 15/3/6).

    Files that fail :func:`probe_image` (unreadable, or too small) take no part in the split: positions count usable
    files only, so adding bad files to a folder changes no split. They are appended to the training list (to the
    test list for a separate test folder), where decoding skips them with one warning each and counts them.
    """
    root = data_root(root)
    dname, dfolder, dnamed = resolve(data, root)
    files, bad, decoded = _source(dfolder, dnamed and verify, None if stream else size, files, probe=not stream)
    if not files:
        raise DataError(f"none of the {len(bad)} image files under {dfolder} can be read (first: {bad[0]})")
    if test is None and data in DEFAULT_TEST:
        test = DEFAULT_TEST[data]
    if test is not None:
        tname, tfolder, tnamed = resolve(test, root)
        tfiles, tbad, tdecoded = _source(tfolder, tnamed and verify, size)
        decoded = {**(decoded or {}), **tdecoded} if size else None
        train, val, _ = split_files(files, 10, None)
        splits = Splits(train, val, tfiles, {"train": dname, "val": dname, "test": tname},
                        {"train": key_root(dfolder), "val": key_root(dfolder), "test": key_root(tfolder)})
    else:
        tbad = []
        every = (10, 10) if len(files) >= 40 else (8, 4)
        train, val, tst = split_files(files, *every)
        splits = Splits(train, val, tst, {"train": dname, "val": dname, "test": dname},
                        {k: key_root(dfolder) for k in ("train", "val", "test")})
    for split in ("train", "val", "test"):
        if not getattr(splits, split):
            raise DataError(f"the {split} split of {splits.names[split]} is empty ({len(files)} usable images in all)")
    splits.decoded = decoded or {}
    if stream:
        splits.val = [splits.val[i] for i in evenly_spaced(len(splits.val), VAL_LIMIT)]
    splits.check_disjoint(train=not stream)
    splits.train += bad
    splits.test += tbad
    return splits


# ----------------------------------------------------------------------------------------------------- folds

#: k-fold rotation of the bundled Kodak24 by default: 4 folds of 6 test images, so all 24 are test images once.
BUNDLED_FOLDS = 4


def default_folds(data: str | None, test: str | None, root: str | Path | None = None) -> int:
    """The number of folds a run uses when ``--folds`` is not given: ``BUNDLED_FOLDS`` for the bundled Kodak24
    without a separate test set (24 images: one fixed split would test on 6), else 1 (one split)."""
    if test is not None:
        return 1
    return BUNDLED_FOLDS if resolve(data, data_root(root))[1] == BUNDLED else 1


def fold_splits(data: str | None = None, folds: int = BUNDLED_FOLDS, root: str | Path | None = None,
                verify: bool = True, size: int | None = None) -> list[Splits]:
    """k-fold rotation of one data set that has no separate test set: every usable image is a test image once.

    Fold f tests on the usable files at sorted positions i with ``i % folds == f``; the others are split into
    validation and training by the rule of :func:`make_splits` (every 8th to validation below 40 images, every
    10th above). Bundled Kodak24, 4 folds: 15 train / 3 validation / 6 test each, the 4 test sets covering all 24.

    Args:
        data: a named set, a folder, or None for the bundled Kodak24 (as in :func:`make_splits`).
        folds: number of folds (2 ≤ folds ≤ number of usable images).
        root: the folder holding the named sets (default: ``BENCH_DATA``).
        verify: check named sets against their SHA256 manifests.
        size: decode every file once at this shorter side (shared by every fold's ``Splits.decoded``, for
            :class:`ImageStore` and the content check); without it, files are probed by :func:`probe_image`.

    Returns:
        One :class:`Splits` per fold. Unusable files are appended to fold 0's training list only, so that decoding
        warns about (and counts) each of them once.
    """
    dname, dfolder, dnamed = resolve(data, data_root(root))
    files, bad, decoded = _source(dfolder, dnamed and verify, size)
    if not 2 <= folds <= len(files):
        raise DataError(f"--folds must be between 2 and the number of usable images ({len(files)}), got {folds}")
    val_every = 10 if len(files) >= 40 else 8
    out, content = [], {}
    for f in range(folds):
        test = [p for i, p in enumerate(files) if i % folds == f]
        train, val, _ = split_files([p for i, p in enumerate(files) if i % folds != f], val_every, None)
        if not train or not val:
            raise DataError(f"fold {f} of {dname} leaves no training or validation image ({len(files)} usable "
                            f"images, {folds} folds)")
        splits = Splits(train, val, test, {"train": dname, "val": dname, "test": dname},
                        {k: key_root(dfolder) for k in ("train", "val", "test")})
        splits.decoded, splits.content = (decoded if decoded is not None else {}), content
        splits.check_disjoint()  # a copy of a photo in the same folder would be a test image of another fold
        out.append(splits)
    out[0].train += bad
    return out

# ----------------------------------------------------------------------------------------------------- decoding


def load_image(path: Path) -> np.ndarray:
    """Read an image as ``H×W×3`` uint8 sRGB: EXIF orientation applied, any mode (L, P, RGBA, CMYK, 16-bit)
    converted. Raises ``OSError``/``ValueError`` for unreadable files (``TooLargeError`` above ``MAX_PIXELS``)."""
    with open_image(path) as im:
        im.load()  # forces a full decode: a truncated file fails here, not later
        im = ImageOps.exif_transpose(im)
        if im.mode in ("I;16", "I;16B", "I;16L", "I"):
            a = np.asarray(im, dtype=np.float64)
            scale = 257.0 if a.max() > 255 or im.mode.startswith("I;16") else 1.0
            a = np.clip(np.round(a / scale), 0, 255).astype(np.uint8)
            return np.repeat(a[..., None], 3, axis=2)
        if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
            im = im.convert("RGBA")
            bg = Image.new("RGBA", im.size, (255, 255, 255, 255))  # transparent pixels become white
            im = Image.alpha_composite(bg, im)
        return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()


def shorter_side_size(h: int, w: int, size: int) -> tuple[int, int]:
    """(height, width) after resizing so that the shorter side is ``size`` (aspect ratio kept, rounded)."""
    s = size / min(h, w)
    return max(size, round(h * s)), max(size, round(w * s))


def resize_shorter(img: np.ndarray, size: int) -> np.ndarray:
    """Resize an ``H×W×3`` uint8 image so its shorter side is ``size`` (PIL bilinear, antialiased when shrinking).

    The training pipeline and the naive reference loop of ``bench.data.pipeline`` both use this, so their crops agree
    byte for byte."""
    h, w = img.shape[:2]
    nh, nw = shorter_side_size(h, w, size)
    if (nh, nw) == (h, w):
        return img
    return np.array(Image.fromarray(img).resize((nw, nh), Image.BILINEAR))


def _decode(path: Path, size: int):
    try:
        arr = load_image(path)
    except UNREADABLE as err:
        return None, _why(err)
    if min(arr.shape[:2]) < MIN_SIDE:
        return None, f"too small ({arr.shape[1]}x{arr.shape[0]}, shorter side < {MIN_SIDE})"
    return torch.from_numpy(resize_shorter(arr, size)).permute(2, 0, 1).contiguous(), None


class ImageStore:
    """Images decoded once and kept as uint8 ``3×H×W`` tensors with shorter side ``size``.

    Unreadable or too-small files are skipped with one warning each and counted in ``skipped``.

    Args:
        files: image paths.
        size: shorter side after resizing (images smaller than that are upscaled).
        workers: decoding threads (PIL releases the GIL while decoding).
        decoded: results of :func:`decode_files` at this ``size`` (``Splits.decoded``): those files are not
            decoded again.
    """

    def __init__(self, files: list[Path], size: int, workers: int | None = None, decoded: dict | None = None):
        ImageFile.LOAD_TRUNCATED_IMAGES = False
        self.size = size
        self.images: list[torch.Tensor] = []
        self.files: list[Path] = []
        self.skipped: list[tuple[str, str]] = []
        workers = workers or min(8, os.cpu_count() or 1)
        decoded = decoded or {}
        with ThreadPoolExecutor(workers) as pool:
            results = pool.map(lambda p: decoded[p] if p in decoded else _decode(p, size), files)
            for path, (img, why) in zip(files, results):
                if img is None:
                    warnings.warn(f"skipping {path}: {why}", stacklevel=2)
                    self.skipped.append((str(path), why))
                else:
                    self.images.append(img)
                    self.files.append(path)
        if not self.images:
            raise DataError(f"none of the {len(files)} images could be read (first: {self.skipped[0] if self.skipped else '-'})")

    def __len__(self) -> int:
        return len(self.images)

    def image(self, i: int) -> torch.Tensor:
        """Image i (decoded at construction)."""
        return self.images[i]

    def sample(self, limit: int | None = None) -> list[torch.Tensor]:
        """The images behind the training set's statistics (mean colour, bin prior): all of them, for a set in
        RAM (``limit`` is for streamed sets, ``bench.data.loader.FileStore``)."""
        return self.images

    def centre_crops(self, crop: int | None = None) -> torch.Tensor:
        """Evaluation preprocessing: every image's centre ``crop×crop`` (default ``size``), as ``N×3×c×c`` uint8."""
        c = crop or self.size
        out = []
        for img in self.images:
            h, w = img.shape[-2:]
            top, left = (h - c) // 2, (w - c) // 2
            out.append(img[:, top : top + c, left : left + c])
        return torch.stack(out)


def epoch_order(n: int, crop_seed: int, epoch: int) -> np.ndarray:
    """The order in which epoch ``epoch`` visits ``n`` training images: a permutation seeded by (crop_seed, epoch)."""
    return np.random.default_rng([crop_seed, epoch]).permutation(n)


#: Augmentations of the training view (``CellConfig.augment``): ``none`` (a crop), ``flip`` (a crop, flipped left to
#: right with probability ½) and ``rrc`` (a random-resized crop, then the flip).
AUGMENTS = ("none", "flip", "rrc")
#: Random-resized crops: the box's area as a share of the square on the image's shorter side, and the range of its
#: aspect ratio (drawn log-uniformly). The box is resized to the crop, so with images decoded at twice the crop
#: (``train_size``) a box on the whole shorter side is the test images' scale and the smallest one a 2× zoom.
RRC_AREA = (0.25, 1.0)
RRC_ASPECT = (3 / 4, 4 / 3)


def crop_offset(h: int, w: int, crop: int, crop_seed: int, epoch: int, i: int, view: int = 0) -> tuple[int, int, bool]:
    """(top, left, flip) of the crop of image i (``h×w`` after resizing) in an epoch, from a generator seeded by
    (crop_seed, epoch, i) alone; ``view=1`` is an independent second view (used as colour reference by
    reference-based models), and only that view may flip (without augmentation; see :func:`crop_box`)."""
    top, left, _, _, flip = crop_box(h, w, crop, crop_seed, epoch, i, view)
    return top, left, flip


def crop_box(h: int, w: int, crop: int, crop_seed: int, epoch: int, i: int, view: int = 0,
             augment: str = "none") -> tuple[int, int, int, int, bool]:
    """(top, left, height, width, flip) of the box that becomes image i's ``crop×crop`` view in an epoch.

    Drawn from a generator seeded by (crop_seed, epoch, i[, view]) alone, so every cell of a grid sees the same
    views. Without ``rrc`` the box is the crop itself and the draws are those of earlier versions (``none`` gives
    the same batches as before augmentation existed); ``flip`` adds a draw for the training view's flip.

    Args:
        h, w: the image's size after resizing.
        crop: side of the view.
        crop_seed, epoch, i, view: the seed of the draws (``view`` 1: the reference's independent second view).
        augment: one of :data:`AUGMENTS`.
    """
    rng = np.random.default_rng([crop_seed, epoch, i] + ([view] if view else []))
    if augment != "rrc":
        top = int(rng.integers(0, h - crop + 1))
        left = int(rng.integers(0, w - crop + 1))
        flip = bool((view or augment == "flip") and rng.integers(0, 2))
        return top, left, crop, crop, flip
    side = min(h, w)
    bh = bw = side
    for _ in range(10):  # as torchvision's RandomResizedCrop: a few tries, then the whole shorter side
        area = rng.uniform(*RRC_AREA) * side * side
        aspect = math.exp(rng.uniform(math.log(RRC_ASPECT[0]), math.log(RRC_ASPECT[1])))
        th, tw = round(math.sqrt(area / aspect)), round(math.sqrt(area * aspect))
        if 0 < th <= h and 0 < tw <= w:
            bh, bw = th, tw
            break
    top = int(rng.integers(0, h - bh + 1))
    left = int(rng.integers(0, w - bw + 1))
    return top, left, bh, bw, bool(rng.integers(0, 2))


class CropSchedule:
    """The fixed-seed sample stream: which image, and which crop of it, every position of training sees.

    Epoch e visits the images in the order ``permutation(crop_seed, e)``; image i in epoch e is cropped at an
    offset drawn from a generator seeded with ``(crop_seed, e, i)``. Batches are consecutive runs of the stream.

    A streamed store (``bench.data.loader.FileStore``) decodes image i when it is cropped and gives the same pixels as
    :class:`ImageStore`, so both feed byte-identical batches. A file that turns out unusable there is replaced by
    the next usable photo of the epoch's order (and reported by the loader).

    Args:
        store: the training images: an :class:`ImageStore` or anything with ``size``, ``len`` and ``image(i)``
            (None for an unusable file).
        crop: side of the square crops (≤ the store's ``size``).
        crop_seed: the seed shared by every cell of a grid.
        augment: the training views' augmentation (:data:`AUGMENTS`), drawn from the same seeds.
    """

    def __init__(self, store: ImageStore, crop: int, crop_seed: int, augment: str = "none"):
        if crop > store.size:
            raise ValueError(f"crop {crop} is larger than the resized images' shorter side {store.size}")
        if augment not in AUGMENTS:
            raise ValueError(f"augment must be one of {', '.join(AUGMENTS)}, not {augment!r}")
        self.store, self.crop, self.crop_seed, self.augment = store, crop, crop_seed, augment
        self._orders: dict[int, np.ndarray] = {}

    def order(self, epoch: int) -> np.ndarray:
        if epoch not in self._orders:
            self._orders[epoch] = epoch_order(len(self.store), self.crop_seed, epoch)
        return self._orders[epoch]

    def offset(self, i: int, epoch: int, view: int = 0) -> tuple[int, int, bool]:
        """(top, left, flip) of image i's crop in an epoch (see :func:`crop_box`)."""
        h, w = self.store.image(i).shape[-2:]
        top, left, _, _, flip = crop_box(h, w, self.crop, self.crop_seed, epoch, i, view, self.augment)
        return top, left, flip

    def positions(self, k: int, batch_size: int) -> list[tuple[int, int]]:
        """(image index, epoch) of every sample in batch k."""
        return [self.position(p) for p in range(k * batch_size, (k + 1) * batch_size)]

    def position(self, p: int) -> tuple[int, int]:
        """(image index, epoch) of sample p of the stream (batch k holds samples k·B … k·B + B − 1)."""
        n = len(self.store)
        return int(self.order(p // n)[p % n]), p // n

    def _after(self, i: int, e: int, step: int = 1) -> int:
        """The image ``step`` places after image i in epoch e's order (cyclic)."""
        order = self.order(e)
        return int(order[(int(np.nonzero(order == i)[0][0]) + step) % len(order)])

    def usable(self, i: int, e: int) -> tuple[int, torch.Tensor]:
        """(index, pixels) of image i, or of the next usable image in epoch e's order when i cannot be decoded."""
        img = self.store.image(i)
        if img is not None:
            return i, img
        for step in range(1, len(self.store)):
            j = self._after(i, e, step)
            img = self.store.image(j)
            if img is not None:
                return j, img
        raise DataError("none of the training images can be decoded")

    def _cut(self, i: int, img: torch.Tensor, e: int, view: int) -> torch.Tensor:
        """The view of image i (pixels ``img``) in epoch e for ``view`` (see :func:`crop_box`)."""
        top, left, bh, bw, flip = crop_box(*img.shape[-2:], self.crop, self.crop_seed, e, i, view, self.augment)
        img = img[:, top : top + bh, left : left + bw]
        if (bh, bw) != (self.crop, self.crop):  # a random-resized box: resized to the crop, antialiased when shrunk
            img = F.interpolate(img[None].float(), size=(self.crop, self.crop), mode="bilinear", align_corners=False,
                                antialias=True)[0].round_().clamp_(0, 255).to(torch.uint8)
        return img.flip(-1) if flip else img

    def crop_of(self, i: int, e: int, view: int) -> torch.Tensor:
        """The crop of image i in epoch e (``view`` 1: the independent second view), ``3×crop×crop`` uint8."""
        return self._cut(*self.usable(i, e), e, view)

    def reference_of(self, i: int, e: int, other_photo: bool) -> torch.Tensor:
        """The colour reference of image i in epoch e: its second view, or (``other_photo``) a view of the photo
        that comes next in the epoch's order."""
        return self.crop_of(self._after(i, e) if other_photo else i, e, 1)

    def sample_of(self, i: int, e: int, reference: str | None) -> tuple[torch.Tensor, torch.Tensor | None, int]:
        """(crop, colour reference or None, index of the image used) of image i in epoch e, decoding it once:
        :meth:`crop_of` and :meth:`reference_of` in one (``reference``: None, ``"same"`` or ``"other"``)."""
        used, img = self.usable(i, e)
        if reference is None:
            ref = None
        elif reference == "other":
            ref = self.reference_of(i, e, True)
        else:
            ref = self._cut(used, img, e, 1)
        return self._cut(used, img, e, 0), ref, used

    def batch(self, k: int, batch_size: int, view: int = 0) -> torch.Tensor:
        """Batch k as a ``B×3×crop×crop`` uint8 tensor (on the CPU)."""
        return torch.stack([self.crop_of(i, e, view) for i, e in self.positions(k, batch_size)])

    def reference_batch(self, k: int, batch_size: int, other_photo: bool = False) -> torch.Tensor:
        """Colour references for batch k (see :meth:`reference_of`)."""
        return torch.stack([self.reference_of(i, e, other_photo) for i, e in self.positions(k, batch_size)])


# ----------------------------------------------------------------------------------------------- content checks

#: Side of the greyscale thumbnail behind :func:`fingerprint`.
FINGERPRINT_SIDE = 16
#: Shorter side at which :meth:`Splits.check_disjoint` decodes a file whose pixels it was not given.
FINGERPRINT_DECODE = 64
#: Two fingerprints whose correlation reaches this are the same photo. Measured: a bundled Kodak photo against its
#: 768×512 original, PNG or re-encoded as JPEG (quality 60), ≥ 0.9999; distinct photos of kodak24, cbsd68 and
#: imagenet-sample (1,066 images, all pairs) at most 0.911.
SAME_CONTENT = 0.98


def fingerprint(img: torch.Tensor) -> str:
    """A content fingerprint of a ``3×H×W`` uint8 image that survives resizing and re-encoding: its luma averaged
    down to a 16×16 thumbnail, mean removed, scaled to unit norm and stored as base64 int8."""
    rgb = img.float()
    y = (0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2])[None, None]
    v = F.interpolate(y, size=(FINGERPRINT_SIDE, FINGERPRINT_SIDE), mode="area").flatten().double()
    v = v - v.mean()
    v = v / (v.abs().max() + 1e-12)
    return base64.b64encode((v * 127).round().to(torch.int8).numpy().tobytes()).decode()


def fingerprint_rows(fps: list[str]) -> np.ndarray:
    """Fingerprints (:func:`fingerprint`) as the rows of an ``N×256`` int8 matrix: their compact form on disk."""
    if not fps:
        return np.zeros((0, FINGERPRINT_SIDE**2), dtype=np.int8)
    return np.stack([np.frombuffer(base64.b64decode(f), dtype=np.int8) for f in fps])


def _unit(rows: np.ndarray) -> np.ndarray:
    m = rows.astype(np.float32)
    return m / (np.linalg.norm(m, axis=1, keepdims=True) + 1e-12)


def content_matches(fps: list[str], known: np.ndarray, threshold: float = SAME_CONTENT,
                    chunk: int = 65_536) -> list[tuple[int, int]]:
    """(i, j) for every ``fps[i]`` that shows the same photo as row j of ``known`` (:func:`fingerprint_rows`; the
    best match, correlation ≥ ``threshold``), in chunks of ``chunk`` rows so that a million known images take
    little memory."""
    if not fps or not len(known):
        return []
    query = _unit(fingerprint_rows(fps))
    best_corr, best = np.full(len(fps), -np.inf, dtype=np.float32), np.zeros(len(fps), dtype=np.int64)
    for start in range(0, len(known), chunk):
        corr = query @ _unit(known[start : start + chunk]).T
        j = corr.argmax(axis=1)
        c = corr[np.arange(len(fps)), j]
        better = c > best_corr
        best_corr[better], best[better] = c[better], j[better] + start
    return [(i, int(best[i])) for i in range(len(fps)) if best_corr[i] >= threshold - 1e-6]


def same_content(fps: list[str], known: list[str], threshold: float = SAME_CONTENT) -> list[tuple[int, int]]:
    """(i, j) for every ``fps[i]`` that shows the same photo as ``known[j]`` (the best match; correlation of the
    fingerprints ≥ ``threshold``)."""
    return content_matches(fps, fingerprint_rows(known), threshold)


def fingerprint_files(files: list[Path], progress: bool = True) -> tuple[np.ndarray, list[bool]]:
    """The fingerprints of image files as :func:`fingerprint_rows` (a zero row for a file that cannot be read)
    and which files could be read; each decoded small (``FINGERPRINT_DECODE``), with a progress bar."""
    from tqdm.auto import tqdm

    rows = np.zeros((len(files), FINGERPRINT_SIDE**2), dtype=np.int8)
    ok = [False] * len(files)

    def one(p):
        img = _decode(p, FINGERPRINT_DECODE)[0]
        return None if img is None else fingerprint_rows([fingerprint(img)])[0]

    with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
        for i, row in enumerate(tqdm(pool.map(one, files), total=len(files), desc="fingerprints", leave=False,
                                     disable=not progress or len(files) < 1000)):
            if row is not None:
                rows[i], ok[i] = row, True
    return rows, ok


def mean_ab(images) -> tuple[float, float]:
    """The mean ab over every pixel of some ``3×H×W`` uint8 images (the mean-colour baseline's constant)."""
    total, n = torch.zeros(2, dtype=torch.float64), 0
    for img in images:
        ab = rgb_to_lab(img[None].float() / 255.0)[0, 1:]
        total += ab.double().sum(dim=(1, 2))
        n += ab.shape[1] * ab.shape[2]
    if n == 0:
        raise DataError("no training pixels to average")
    a, b = (total / n).tolist()
    return a, b
