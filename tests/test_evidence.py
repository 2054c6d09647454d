"""Evidence in the repository: every ``results/...`` file that the README or a comment/docstring of the code cites is
tracked by git (a cited measurement that was never committed cannot be checked).

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
SOURCES = ["README.md", "results/README.md", "bench", "models", "losses", "benchmarks"]


def _texts():
    for name in SOURCES:
        path = ROOT / name
        for f in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
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
