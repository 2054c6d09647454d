"""Helpers shared by the tests: running commands, and reading back a report's two files (imported as ``helpers``:
pytest puts ``tests/`` on the path)."""
from __future__ import annotations

import re
import shutil
from html.parser import HTMLParser
import textwrap
from pathlib import Path

from bench import ablate
from bench.data.sources import list_images
from bench.reporting import document as d


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


# ------------------------------------------------------------------------------------------------ report files


class Parsed(HTMLParser):
    """Headings (level, id, text), tables (rows of cell texts, header row first), scripts, every start tag."""

    def __init__(self):
        super().__init__()
        self.headings, self.tables, self.scripts, self.tags = [], [], [], []
        self._heading = self._cell = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append((tag, a))
        if re.fullmatch(r"h[1-6]", tag):
            self._heading = [int(tag[1]), a.get("id"), ""]
        elif tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = ""
        elif tag == "script":
            self.scripts.append(a)

    def handle_endtag(self, tag):
        if re.fullmatch(r"h[1-6]", tag) and self._heading:
            self.headings.append(tuple(self._heading))
            self._heading = None
        elif tag in ("td", "th"):
            self.tables[-1][-1].append(self._cell)
            self._cell = None

    def handle_data(self, data):
        if self._heading is not None:
            self._heading[2] += data
        if self._cell is not None:
            self._cell += data


def parse(text: str) -> Parsed:
    """The parsed HTML page."""
    p = Parsed()
    p.feed(text)
    p.close()
    return p


def md_tables(md: str) -> list[list[list[str]]]:
    """The Markdown's pipe tables as rows of unescaped cell texts (header first, the --- line left out, a link as
    its text)."""
    out, current = [], None
    for line in md.splitlines():
        if not line.startswith("|"):
            current = None
            continue
        if current is None:
            current = []
            out.append(current)
        cells = [re.sub(r"^\[(.*)\]\([^)]*\)$", r"\1", c.strip()) for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        cells = [re.sub(r"\\(.)", r"\1", c) for c in cells]  # a link as its text, then unescaped
        if not all(re.fullmatch(r":?-+:?", c) for c in cells):
            current.append(cells)
    return out


def text_of(cell) -> str:
    """A table cell's text (a link's text)."""
    return cell.text if isinstance(cell, d.Link) else cell


def same_in_both(doc: d.Document, md: str, html: str) -> None:
    """Every heading of the document is in the Markdown as ``#…`` and in the HTML as ``<hN id=…>`` (same text, same
    order), and every table's header and rows are in both, cell by cell."""
    page = parse(html)
    heads, ids = d.headings(doc.blocks), d.anchors(doc)
    lines = md.splitlines()
    for h in heads:
        assert "#" * h.level + " " + d.md_text(h.text) in lines, h
    assert [(h.level, ids[id(h)], h.text) for h in heads] == page.headings
    want = [[t.columns] + [[text_of(c) for c in row] for row in t.rows] for t in d.tables(doc.blocks)]
    assert md_tables(md) == want
    assert page.tables == want

#: What ``hanging_ablate`` runs: ``bench.ablate``'s main with the job trainer wrapped, in the worker process itself.
_HANGING_ABLATE = textwrap.dedent("""\
    import sys
    import time

    from bench import ablate
    from bench.grid import jobrun

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

    The worker's ``bench.grid.jobrun.JobTrainer.train`` is wrapped before ``bench.ablate.main`` runs; nothing of this is
    in the production code."""
    return ["-c", _HANGING_ABLATE.replace("HANG_AT_STEP", str(int(step)))]
