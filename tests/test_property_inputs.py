"""Issue 31, item 5: property-based tests of the input surface (hypothesis, bounded examples, in-process).

Random ``--set`` values and YAML configuration documents given to ``ablate --dry-run``, and random image files
(truncated, wrong mode, huge headers, odd names) given to the decoder and to ``make_splits``: every outcome is exit
code 0 or one ``error:`` line with exit code 2, and no exception escapes."""
from __future__ import annotations

import io
import json
import shutil
import struct
import zlib

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from bench import ablate
from bench.config.cell import CellConfig
from bench.data.sources import BUNDLED, DataError, decode_files, make_splits, probe_image

FAST = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None,
                derandomize=True)  # the same examples on every run: CI stays reproducible
FIELDS = [f for f in CellConfig.__dataclass_fields__]
json_values = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True)
                           | st.text(max_size=12), lambda c: st.lists(c, max_size=3)
                           | st.dictionaries(st.text(max_size=8), c, max_size=3), max_leaves=6)


def outcome(argv, capsys) -> None:
    rc = ablate.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert rc in (0, 2), (argv, rc, err)
    assert "Traceback" not in err
    if rc == 2:
        lines = [line for line in err.splitlines() if line.startswith("error:")]
        assert len(lines) == 1, err


@FAST
@given(key=st.sampled_from(FIELDS + ["loss_params.space", "model_params.skips", "nope"]), value=json_values)
def test_random_set_values_are_accepted_or_one_line(tmp_path_factory, capsys, key, value):
    out = tmp_path_factory.mktemp("set")
    outcome(["--grid", "tiny", "--dry-run", "--out", out / "run", "--set", f"{key}={json.dumps(value)}"], capsys)


yaml_docs = st.recursive(
    st.none() | st.booleans() | st.integers(-10**12, 10**12) | st.text(max_size=10),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(
        st.sampled_from(["preset", "set", "grids", "g", "cells", "c", "loss", "batch_size", "loss_params",
                         "space", "description", "steps", "x"]), c, max_size=3), max_leaves=10)


@FAST
@given(doc=yaml_docs)
def test_random_yaml_documents_are_accepted_or_one_line(tmp_path_factory, capsys, doc):
    folder = tmp_path_factory.mktemp("yaml")
    path = folder / "c.yaml"
    path.write_text(json.dumps(doc))  # JSON is YAML
    outcome(["--config", path, "--grid", "g", "--dry-run", "--out", folder / "run"], capsys)


@FAST
@given(text=st.text(max_size=200))
def test_random_yaml_text_is_accepted_or_one_line(tmp_path_factory, capsys, text):
    folder = tmp_path_factory.mktemp("yamltext")
    path = folder / "c.yaml"
    path.write_text(text, encoding="utf-8")
    outcome(["--config", path, "--grid", "g", "--dry-run", "--out", folder / "run"], capsys)


def _png_header(w: int, h: int, depth: int, colour: int) -> bytes:
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, colour, 0, 0, 0))


@st.composite
def image_files(draw) -> tuple[str, bytes]:
    """(file name, bytes): a real small image in a random mode and format, then maybe truncated or corrupted, or a
    PNG header declaring a huge image, or random bytes."""
    kind = draw(st.sampled_from(["image", "huge header", "random"]))
    ext = draw(st.sampled_from([".png", ".jpg", ".bmp", ".tif", ".webp", ".JPEG"]))
    name = draw(st.text(st.characters(blacklist_characters="/\x00", blacklist_categories=("Cs",)), min_size=1,
                        max_size=12)) + ext
    if kind == "random":
        return name, draw(st.binary(max_size=300))
    if kind == "huge header":
        w, h = draw(st.integers(1, 2**31 - 1)), draw(st.integers(1, 2**31 - 1))
        return name, _png_header(w, h, 8, 2) + draw(st.binary(max_size=50))
    mode = draw(st.sampled_from(["RGB", "L", "RGBA", "P", "CMYK", "I;16", "1", "LA"]))
    w, h = draw(st.integers(1, 80)), draw(st.integers(1, 80))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    im = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).convert(
        "RGB" if mode in ("I;16",) else mode)
    buf = io.BytesIO()
    fmt = {".png": "PNG", ".jpg": "JPEG", ".JPEG": "JPEG", ".bmp": "BMP", ".tif": "TIFF", ".webp": "WEBP"}[ext]
    try:
        im.save(buf, fmt)
    except (OSError, ValueError, KeyError):  # a mode the format cannot hold
        im.convert("RGB").save(buf, fmt)
    data = buf.getvalue()
    cut = draw(st.integers(0, len(data)))
    return name, data[:cut] if draw(st.booleans()) else data


@FAST
@given(files=st.lists(image_files(), min_size=1, max_size=4))
def test_random_image_files_decode_or_are_skipped_with_a_reason(tmp_path_factory, files):
    folder = tmp_path_factory.mktemp("img")
    paths = []
    for i, (name, data) in enumerate(files):
        path = folder / f"{i}_{name}"
        try:
            path.write_bytes(data)
        except OSError:  # a name this file system refuses
            continue
        paths.append(path)
    for path, (img, why) in decode_files(paths, 32).items():
        assert (img is None) != (why is None)
        if img is not None:
            assert img.dtype.is_floating_point is False and img.shape[0] == 3 and min(img.shape[1:]) == 32
        assert (probe_image(path) is None) == (why is None) or "too small" in (why or probe_image(path) or "")


@settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck), database=None, derandomize=True)
@given(files=st.lists(image_files(), min_size=1, max_size=3))
def test_random_files_among_real_photos_split_or_fail_in_one_line(tmp_path_factory, files):
    train = tmp_path_factory.mktemp("train")
    for p in sorted(BUNDLED.glob("*.png"))[:10]:
        shutil.copy(p, train / p.name)
    for i, (name, data) in enumerate(files):
        try:
            (train / f"{i}_{name}").write_bytes(data)
        except OSError:
            continue
    try:
        splits = make_splits(str(train), size=32)
    except DataError as err:
        assert "\n" not in str(err)
    else:
        assert len(splits.train) + len(splits.val) + len(splits.test) >= 10
