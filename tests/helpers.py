"""Helpers shared by the command-line tests (imported as ``helpers``: pytest puts ``tests/`` on the path)."""
from __future__ import annotations

import shutil
import textwrap
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


#: What ``hanging_ablate`` runs: ``bench.ablate``'s main with the job trainer wrapped, in the worker process itself.
_HANGING_ABLATE = textwrap.dedent("""\
    import sys
    import time

    from bench import ablate, jobrun

    train = jobrun.JobTrainer.train


    def hanging(self, job, prep, on_validation=None, retry=False):
        def hook(step, val_psnr):
            if on_validation is not None:
                on_validation(step, val_psnr)  # reported to the study first: the test waits to see this step
            if step >= HANG_AT_STEP:
                time.sleep(3600)

        return train(self, job, prep, hook, retry)


    jobrun.JobTrainer.train = hanging
    sys.exit(ablate.main())
    """)


def hanging_ablate(step: int) -> list[str]:
    """Python arguments (``-c CODE``) that run ``colorbench ablate`` with the arguments that follow them, as a
    worker whose trial blocks after its first validation at step ≥ ``step`` (its heartbeat still beating), so that a
    test can kill it mid-trial deterministically: ``[sys.executable, *hanging_ablate(20), "--grid", ...]``.

    The worker's ``bench.jobrun.JobTrainer.train`` is wrapped before ``bench.ablate.main`` runs; nothing of this is
    in the production code."""
    return ["-c", _HANGING_ABLATE.replace("HANG_AT_STEP", str(int(step)))]
