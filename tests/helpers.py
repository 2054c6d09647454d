"""Helpers shared by the command-line tests (imported as ``helpers``: pytest puts ``tests/`` on the path)."""
from __future__ import annotations

import shutil
from pathlib import Path

from bench import ablate
from bench.data import list_images


def run(argv, capsys) -> tuple[int, str, str]:
    """Run ``bench.ablate`` in this process; returns (exit code, stdout, stderr)."""
    rc = ablate.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def one_error(rc: int, err: str, *needles: str) -> str:
    """Exit 2, exactly one one-line ``error: ...`` message on stderr naming every needle, no traceback; returns the
    message."""
    assert rc == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def train_and_test_folders(tmp_path: Path, data_root: Path) -> tuple[Path, Path, list[Path]]:
    """``tmp_path/train`` with the first 12 cbsd68 photos and ``tmp_path/test`` with the last 3; returns both
    folders and the photos."""
    train, test = tmp_path / "train", tmp_path / "test"
    train.mkdir()
    test.mkdir()
    photos = list_images(data_root / "cbsd68")
    for p in photos[:12]:
        shutil.copy(p, train / p.name)
    for p in photos[-3:]:
        shutil.copy(p, test / p.name)
    return train, test, photos
