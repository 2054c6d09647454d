"""Reliability (issue 6): bad image files among real photos, and damaged or half-written result files.

The bad-file folder is generated here from real photos: readable but unusual files (greyscale, RGBA, CMYK JPEG,
palette PNG, 16-bit grey and RGB PNGs, an EXIF-rotated JPEG, an image smaller than the crop) that must load with
the right pixels, and unusable ones (truncated JPEG, corrupt PNG, text named .jpg, zero bytes, an image under 16 px)
that must be skipped with one warning each and counted.
"""
from __future__ import annotations

import csv
import os
import shutil
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench import ablate
from bench.core.records import CorruptRecordError, append_rows, atomic_write_text, read_rows
from bench.data.sources import ImageStore, list_images, load_image, make_splits

H, W = 48, 64  # the odd images' upright size; ImageStore(…, 48) keeps them unresized, so pixels compare exactly
UNUSABLE = ["truncated.jpg", "corrupt.png", "not_an_image.jpg", "zero_bytes.jpg", "tiny_10x12.png"]


def write_png16_rgb(path: Path, arr: np.ndarray) -> None:
    """A 16-bit RGB PNG written by hand (PIL cannot write one): IHDR bit depth 16, colour type 2, no filtering."""
    h, w, _ = arr.shape
    raw = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def folders(tmp_path_factory, data_root):
    """clean/: 8 real photos + the readable odd files; dirty/: the same + the unusable files; test/: 4 other real
    photos. Returns the folders and, per odd file, the uint8 ``H×W×3`` pixels it must load as."""
    base = tmp_path_factory.mktemp("bad_files")
    clean, dirty, test = base / "clean", base / "dirty", base / "test"
    for d in (clean, dirty, test):
        d.mkdir()
    photos = list_images(data_root / "cbsd68")
    for p in photos[:8]:
        shutil.copy(p, clean / p.name)
    for p in photos[-4:]:
        shutil.copy(p, test / p.name)
    # every odd file shows another photo: two files of one photo in two splits are a leak
    # (bench.data.sources.check_disjoint)
    shots = []
    for p in photos[20:28]:
        with Image.open(p) as im:
            shots.append(np.asarray(im.convert("RGB").resize((W, H), Image.BILINEAR)))
    shots = iter(shots)
    rng = np.random.default_rng(0)
    expect: dict[str, np.ndarray] = {}

    photo = next(shots)
    grey = np.asarray(Image.fromarray(photo).convert("L"))
    Image.fromarray(grey).save(clean / "grey.png")
    expect["grey.png"] = np.repeat(grey[..., None], 3, 2)

    photo = next(shots)
    alpha = np.zeros((H, W), np.uint8)
    alpha[:, : W // 2] = 255
    alpha[:, W // 2 : W // 2 + 8] = 128  # half transparent: blended with white
    Image.fromarray(np.dstack([photo, alpha]), "RGBA").save(clean / "rgba.png")
    a = alpha[..., None] / 255.0
    expect["rgba.png"] = np.round(a * photo + (1 - a) * 255).astype(np.uint8)

    photo = next(shots)
    Image.fromarray(photo).convert("CMYK").save(clean / "cmyk.jpg", quality=95)
    expect["cmyk.jpg"] = photo  # lossy: compared with a tolerance

    photo = next(shots)
    pal = Image.fromarray(photo).convert("P", palette=Image.ADAPTIVE, colors=32)
    pal.save(clean / "palette.png")
    lut = np.array(pal.getpalette()[: 3 * 256], np.uint8).reshape(-1, 3)
    expect["palette.png"] = lut[np.asarray(pal)]

    g16 = rng.integers(0, 65536, (H, W)).astype(np.uint16)
    Image.fromarray(g16).save(clean / "grey16.png")  # PIL writes mode I;16 as a 16-bit greyscale PNG
    expect["grey16.png"] = np.repeat(np.round(g16 / 257.0).astype(np.uint8)[..., None], 3, 2)

    photo = next(shots)
    write_png16_rgb(clean / "rgb16.png", photo.astype(np.uint16) * 257)
    expect["rgb16.png"] = photo

    photo = next(shots)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation 6: stored rotated 90° counter-clockwise, shown rotated 90° clockwise
    Image.fromarray(np.ascontiguousarray(np.rot90(photo, 1))).save(clean / "exif_rotated.jpg", exif=exif.tobytes(),
                                                                  quality=95)
    expect["exif_rotated.jpg"] = photo  # lossy

    photo = next(shots)
    Image.fromarray(photo).resize((20, 30), Image.BILINEAR).save(clean / "small_20x30.png")

    for p in clean.iterdir():
        shutil.copy(p, dirty / p.name)
    jpeg = (data_root / "imagenet-sample-256" / "n01440764_tench.jpg").read_bytes()
    (dirty / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    png = bytearray((clean / "grey.png").read_bytes())
    png[60:90] = bytes(30)  # zero a stretch of the compressed data: CRC and zlib errors
    (dirty / "corrupt.png").write_bytes(bytes(png))
    (dirty / "not_an_image.jpg").write_text("this is a text file with a .jpg extension\n")
    (dirty / "zero_bytes.jpg").write_bytes(b"")
    photo = next(shots)
    Image.fromarray(photo[:12, :10]).save(dirty / "tiny_10x12.png")
    return {"clean": clean, "dirty": dirty, "test": test, "expect": expect}


def test_readable_odd_files_load_with_the_right_pixels(folders):
    files = sorted(folders["clean"].glob("*"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing in the clean folder may be skipped
        store = ImageStore(files, H)
    assert len(store) == len(files) and not store.skipped
    loaded = {f.name: img.permute(1, 2, 0).numpy() for f, img in zip(store.files, store.images)}
    for name, want in folders["expect"].items():
        got = loaded[name]
        assert got.shape == (H, W, 3), name
        diff = np.abs(got.astype(int) - want.astype(int))
        if name.endswith(".jpg"):  # lossy JPEG: small mean error; the upright orientation beats the flipped one
            assert diff.mean() < 4, (name, diff.mean())
            assert np.abs(got.astype(int) - want[::-1, ::-1].astype(int)).mean() > 4 * diff.mean() + 4
        elif name == "rgba.png":
            assert diff.max() <= 1, name  # alpha blending rounds
        else:
            assert diff.max() == 0, (name, diff.max())
    small = loaded["small_20x30.png"]
    assert small.shape == (72, 48, 3)  # 20×30 upscaled: shorter side 48, aspect kept


def test_exif_orientation_6_turns_40x80_into_80x40(tmp_path):
    """A 40-wide, 80-high image tagged with orientation 6 loads 80 wide and 40 high, rotated clockwise."""
    img = np.zeros((80, 40, 3), np.uint8)
    img[:40] = (220, 30, 30)  # top half red, bottom half blue
    img[40:] = (30, 30, 220)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(img).save(tmp_path / "o6.jpg", exif=exif.tobytes(), quality=95)
    out = load_image(tmp_path / "o6.jpg")
    assert out.shape == (40, 80, 3)
    # rotated clockwise: the top (red) ends up on the right, the bottom (blue) on the left
    assert out[5:35, 50:75, 0].mean() > 180 and out[5:35, 5:30, 2].mean() > 180


def test_unreadable_files_are_skipped_with_one_warning_each(folders):
    files = sorted(folders["dirty"].glob("*"))
    with pytest.warns(UserWarning) as caught:
        store = ImageStore(files, H)
    msgs = [str(w.message) for w in caught if "skipping" in str(w.message)]
    assert len(msgs) == len(UNUSABLE)
    for name in UNUSABLE:
        assert sum(name in m for m in msgs) == 1, name
    assert sorted(Path(p).name for p, _ in store.skipped) == sorted(UNUSABLE)
    assert [why for p, why in store.skipped if p.endswith("tiny_10x12.png")][0].startswith("too small")
    assert all(why.startswith("unreadable") for p, why in store.skipped if not p.endswith("tiny_10x12.png"))
    assert sorted(f.name for f in store.files) == sorted(p.name for p in folders["clean"].iterdir())


def test_bad_files_change_no_split(folders):
    clean = make_splits(str(folders["clean"]), test=str(folders["test"]))
    dirty = make_splits(str(folders["dirty"]), test=str(folders["test"]))
    names = lambda ps: [p.name for p in ps]  # noqa: E731
    assert names(dirty.val) == names(clean.val)
    assert names(dirty.test) == names(clean.test)
    usable = [p for p in names(dirty.train) if p not in UNUSABLE]
    assert usable == names(clean.train)
    assert sorted(set(names(dirty.train)) - set(usable)) == sorted(UNUSABLE)  # skipped when decoded, and counted


def _run(data: Path, test: Path, out: Path, capsys) -> tuple[int, str]:
    rc = ablate.main(["--grid", "smoke", "--seeds", "1", "--data", str(data), "--test", str(test), "--out", str(out),
                      "--set", "size=32", "--set", "crop=32", "--set", "eval_size=32", "--set", "batch_size=4",
                      "--steps", "3", "--device", "cpu", "--no-progress"])
    return rc, capsys.readouterr().err


def test_a_run_over_bad_files_counts_them_and_matches_the_clean_run(folders, tmp_path, capsys):
    """Same readable files, same split, same decoded images: the metrics of every cell equal the clean run's."""
    rc, err = _run(folders["dirty"], folders["test"], tmp_path / "dirty", capsys)
    assert rc == 0, err
    assert "Traceback" not in err
    assert sum(line.startswith("warning: skipping") for line in err.splitlines()) == len(UNUSABLE)
    rc, err = _run(folders["clean"], folders["test"], tmp_path / "clean", capsys)
    assert rc == 0, err
    with open(tmp_path / "dirty" / "runs.csv", newline="") as fh:
        dirty = {r["cell"]: r for r in csv.DictReader(fh)}
    with open(tmp_path / "clean" / "runs.csv", newline="") as fh:
        clean = {r["cell"]: r for r in csv.DictReader(fh)}
    assert set(dirty) == set(clean) == {"grey", "mean_colour", "oracle_tint", "mse", "kl"}
    for cell in clean:
        assert dirty[cell]["n_skipped"] == str(len(UNUSABLE)) and clean[cell]["n_skipped"] == "0"
        assert dirty[cell]["status"] == clean[cell]["status"] == "ok"
        for col in ("n_train", "n_val", "n_test"):
            assert dirty[cell][col] == clean[cell][col], col
        for col in ("psnr", "ssim", "colourfulness") + (("val_psnr", "final_loss") if cell not in ("grey", "mean_colour", "oracle_tint") else ()):
            assert float(dirty[cell][col]) == pytest.approx(float(clean[cell][col]), abs=1e-9), (cell, col)


# ------------------------------------------------------------------------------------------------ result files


def test_read_rows_reports_damage_with_the_path(tmp_path):
    path = tmp_path / "rows.csv"  # a file with no required columns (runs.csv has its own: test_hostile)
    path.write_text("a,b\n1,2\n")
    assert read_rows(path) == [{"a": "1", "b": "2"}]
    for body in (b"a,b\n1,2\n3,4,5\n", b"a,b\n1,2\n3\n", b"a,b\n1,2\n\xff\xfe\x00garbage\x80\n", b"\n\n"):
        path.write_bytes(body)
        with pytest.raises(CorruptRecordError, match=str(path)):
            read_rows(path)
        with pytest.raises(CorruptRecordError):
            append_rows(path, [{"a": 9, "b": 9}])
        assert path.read_bytes() == body  # never overwritten
    assert read_rows(tmp_path / "missing.csv") == []


def test_append_rows_skips_duplicates_and_never_writes_a_headerless_file(tmp_path):
    path = tmp_path / "rows.csv"
    assert append_rows(path, [], key=("k",)) == 0
    assert not path.exists()  # an empty append (e.g. a diverged run's history) creates nothing
    assert append_rows(path, [{"k": 1, "v": "a"}, {"k": 2, "v": "b"}], key=("k",)) == 2
    assert append_rows(path, [{"k": 2, "v": "again"}, {"k": 3, "v": "c", "w": "new column"}], key=("k",)) == 1
    rows = read_rows(path)
    assert [r["k"] for r in rows] == ["1", "2", "3"]
    assert rows[1]["v"] == "b" and rows[2]["w"] == "new column" and rows[0]["w"] == ""


def test_atomic_write_leaves_the_old_file_when_interrupted(tmp_path, monkeypatch):
    path = tmp_path / "leaderboard.md"
    atomic_write_text(path, "old\n")

    def crash(*args, **kwargs):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="simulated"):
        atomic_write_text(path, "new\n" * 1000)
    monkeypatch.undo()
    assert path.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["leaderboard.md"]  # no temporary left behind
    atomic_write_text(path, "new\n")
    assert path.read_text() == "new\n"
