"""Evidence in the repository: every ``results/...`` file that the README, the documentation (``docs/``) or a
comment/docstring of the code cites is tracked by git (a cited measurement that was never committed cannot be
checked), and every measured number that the README or the documentation states (a number with a unit of time,
size, speed-up, PSNR or share: ``324 s``, ``1.4 GB``, ``0.93×``, ``0.13 dB``, ``48 %``) is found in a tracked file
under ``results/``.

Paths inside a command line (``python -m ...``, ``pytest ...``, ``--out``/``--throughput``/``--benchmark-json``
arguments) are examples of where output goes, not citations, and are left out; so are templates (``<run>``).
"""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CITED = re.compile(r"(?<![\w/.-])results/[\w.+-]+(?:/[\w.+-]+)*(?:\.(?:md|csv|png|html|json|txt)\b|/)")
COMMAND = re.compile(r"python -m|pytest |optuna-dashboard|colorbench |--out|--throughput|--benchmark-json|--run ")
SOURCES = ["README.md", "results/README.md", "bench", "models", "losses", "benchmarks", "docs"]
#: the prose whose measured numbers must be in results/
PROSE = ["README.md", "docs"]
#: a number (or a range of two) with a unit of a measurement; ``×`` only written against the number (``0.93×``), so
#: that sizes such as ``32 × 32`` are not taken for speed-ups; binary units (MiB, GiB) name limits and hardware
MEASURED = re.compile(r"(?<![\w.])(\d[\d,]*(?:\.\d+)?(?:[–-]\d[\d,]*(?:\.\d+)?)?)"
                      r"(?:\s?(dB|s|min|minutes|hours|GB|MB|img/s|%)|(×))(?![\w/])")
TEXT_RESULTS = (".md", ".csv", ".txt", ".json", ".jsonl")


def _files(name: str):
    path = ROOT / name
    if not path.is_dir():
        return [path]
    return sorted(path.rglob("*.md")) if name == "docs" else sorted(path.rglob("*.py"))


def _texts(names=SOURCES):
    for name in names:
        for f in _files(name):
            yield f, f.read_text(encoding="utf-8")


def cited_paths() -> dict[str, str]:
    """``results/...`` path → where it is cited (file:line)."""
    out = {}
    for f, text in _texts():
        for i, line in enumerate(text.splitlines(), 1):
            if COMMAND.search(line):
                continue
            for m in CITED.finditer(line):
                out.setdefault(m.group(0), f"{f.relative_to(ROOT)}:{i}")
    return out


def tracked() -> set[str]:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    res = subprocess.run(["git", "ls-files", "results"], cwd=ROOT, capture_output=True, text=True, check=True)
    return set(res.stdout.split())


def test_the_citation_finder_finds_what_it_should():
    assert CITED.findall("see `results/throughput-cpu.md` and results/reference/") == [
        "results/throughput-cpu.md", "results/reference/"]
    assert not CITED.findall("results/<run>/study.journal, my_results/x.md")


def test_every_cited_results_file_is_tracked():
    files = tracked()
    cited = cited_paths()
    assert "results/throughput-cpu.md" in cited  # the finder sees the README's citations
    missing = {p: where for p, where in cited.items()
               if p not in files and not (p.endswith("/") and any(f.startswith(p) for f in files))}
    assert not missing, f"cited but not in git ls-files: {missing}"


def measured_numbers(text: str) -> list[tuple[int, str, str, str]]:
    """(line, the claim as written, number, unit) of every measured number in ``text``."""
    out = []
    for i, line in enumerate(text.splitlines(), 1):
        for m in MEASURED.finditer(line):
            out.append((i, m.group(0), m.group(1), m.group(2) or m.group(3)))
    return out


def _found(number: str, unit: str, corpus: str) -> bool:
    space = "" if unit == "×" else r"\s?"
    return re.search(r"(?<![\w.,])" + re.escape(number) + space + re.escape(unit) + r"(?![\w/])", corpus) is not None


def test_the_number_finder_finds_what_it_should():
    got = [(claim, unit) for _, claim, _, unit in measured_numbers(
        "324 s wall, 1.4 GB, 0.93× (4.6–5.8 minutes), 48 %, 0.13 dB; not 32 × 32 px, kodim01, v0.1, 2^n")]
    assert got == [("324 s", "s"), ("1.4 GB", "GB"), ("0.93×", "×"), ("4.6–5.8 minutes", "minutes"),
                   ("48 %", "%"), ("0.13 dB", "dB")]
    assert _found("5", "%", "rejects 5 % of the time") and not _found("5", "%", "covered 95 % of the time")


def test_every_measured_number_of_the_readme_and_docs_is_in_results():
    files = [f for f in tracked() if f.endswith(TEXT_RESULTS)]
    corpus = "\n".join((ROOT / f).read_text(encoding="utf-8", errors="replace") for f in files)
    missing = [f"{f.relative_to(ROOT)}:{i}: {claim}" for f, text in _texts(PROSE)
               for i, claim, number, unit in measured_numbers(text) if not _found(number, unit, corpus)]
    assert not missing, "measured numbers found in no tracked file under results/:\n" + "\n".join(missing)
