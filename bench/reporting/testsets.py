"""Results on several test sets: one leaderboard per set scored by ``bench.evaluate``, and how the rankings agree.

A run folder's own test set is scored during training (``runs.csv``, ``per_image.csv``); every other set that
``python -m bench.evaluate RUN_DIR --test SET`` scored lives in ``evaluations/<set>/`` with the same two files. The
cross-set summary gives each cell's rank on each set and the Spearman rank correlation of the trained cells' mean
PSNR between every two sets (computed over the cells scored on both; the baselines, grey and the mean colour, are
shown but left out of the correlation: they are no cells, and their distance from every trained cell would inflate
it). Any ranking metric works (``metric``).
"""
from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from bench.core.records import atomic_write_text, untrained_mask
from bench.metrics import stats as pstats
from bench.reporting import leaderboard


def evaluation_dirs(run_dir) -> dict[str, Path]:
    """Test-set name → folder of every set that ``bench.evaluate`` scored for this run, sorted by name."""
    out = {}
    for runs in sorted(Path(run_dir).glob("evaluations/*/runs.csv")):
        df = leaderboard.load_runs(runs.parent)
        name = str(df["test_set"].iloc[0]) if "test_set" in df and len(df) else runs.parent.name
        out[name] = runs.parent
    return out


def boards(run_dir, main_board: pd.DataFrame | None = None, n_boot: int | None = None,
           metric: str | pstats.Metric = "psnr") -> dict[str, pd.DataFrame]:
    """Test-set name → leaderboard (``leaderboard.build``): the run's own test set first, then every evaluated set.

    Args:
        run_dir: the run folder.
        main_board: the leaderboard of the run's own test set, if already built.
        n_boot: bootstrap resamples of the per-set comparisons (default: ``leaderboard.build``'s).
        metric: the ranking metric (``leaderboard.build``).
    """
    run_dir = Path(run_dir)
    kw = {"metric": metric} if n_boot is None else {"metric": metric, "n_boot": n_boot}
    runs = leaderboard.load_runs(run_dir)
    main = str(runs["data_test"].iloc[0]) if "data_test" in runs and len(runs) else "own test set"
    if main_board is None:
        main_board, _ = leaderboard.build(runs, leaderboard.load_per_image(run_dir), features_dir=run_dir / "features",
                                          **kw)
    out = {main: main_board}
    for name, folder in evaluation_dirs(run_dir).items():
        label = f"{name} (re-scored)" if name in out else name
        out[label], _ = leaderboard.build(leaderboard.load_runs(folder), leaderboard.load_per_image(folder),
                                          features_dir=folder / "features", **kw)
    return out


def cross_set(tables: dict[str, pd.DataFrame]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(each cell's rank and score on each set, Spearman correlation of every two sets' scores over the trained
    cells: the baselines are listed in the ranks but left out of the correlation).

    Args:
        tables: test-set name → leaderboard with ``model``, ``cell``, ``rank`` and ``score`` (the ranking metric's
            mean) columns.

    Returns:
        ranks: one row per (model, cell), columns ``<set> rank`` and ``<set> score``; spearman: one row per pair of
        sets with ``rho``, its two-sided ``p`` and ``n_cells`` (cells ranked on both sets, at least 3 for a value).
    """
    ranks = None
    for name, b in tables.items():
        if b.empty:
            continue
        part = b[["model", "cell", "rank", "score"]].rename(columns={"rank": f"{name} rank",
                                                                     "score": f"{name} score"})
        ranks = part if ranks is None else ranks.merge(part, on=["model", "cell"], how="outer")
    if ranks is None:
        return pd.DataFrame(), pd.DataFrame()
    first = next(n for n in tables if f"{n} rank" in ranks)
    ranks = ranks.sort_values(f"{first} rank", kind="stable", na_position="last").reset_index(drop=True)
    pairs = []
    for a, b in itertools.combinations([n for n in tables if f"{n} score" in ranks], 2):
        both = ranks.loc[~untrained_mask(ranks["cell"]), [f"{a} score", f"{b} score"]].dropna()
        rho, p = spearman(both.iloc[:, 0], both.iloc[:, 1]) if len(both) >= 3 else (math.nan, math.nan)
        pairs.append({"set A": a, "set B": b, "n_cells": len(both), "rho": float(rho), "p": float(p)})
    return ranks, pd.DataFrame(pairs)


#: up to this many cells the p-value of Spearman's rho is exact (all n! orderings); above, a Monte-Carlo
#: permutation p from ``N_PERM`` seeded random orderings
EXACT_MAX = 8
N_PERM = 20_000


def spearman(x, y, n_perm: int = N_PERM, seed: int = 0) -> tuple[float, float]:
    """(Spearman's rho, two-sided permutation p-value) of two score lists. The t approximation is far off with few
    cells (p = 0 for three cells in the same order, whose exact p is 1/3), so p is the share of orderings of ``y``
    whose |rho| reaches the observed one: all of them up to ``EXACT_MAX`` cells, else ``n_perm`` seeded random
    ones with the observed ordering counted as one more ((k + 1) / (n_perm + 1): never 0)."""
    res = stats.spearmanr(x, y)
    rho = float(res.statistic)
    if math.isnan(rho):
        return rho, math.nan
    rx = stats.rankdata(x)
    rx = rx - rx.mean()
    ry = stats.rankdata(y)
    if len(x) <= EXACT_MAX:
        perms = np.array(list(itertools.permutations(ry)))  # every ordering of y's ranks, one per row
    else:
        rng = np.random.default_rng(seed)
        perms = rng.permuted(np.tile(ry, (n_perm, 1)), axis=1)
    perms = perms - perms.mean(axis=1, keepdims=True)
    r = perms @ rx / (np.linalg.norm(perms, axis=1) * np.linalg.norm(rx))  # Pearson on ranks = Spearman
    hits = int(np.sum(np.abs(r) >= abs(rho) - 1e-12))
    if len(x) <= EXACT_MAX:
        return rho, hits / len(perms)
    return rho, (hits + 1) / (n_perm + 1)


INTRO = ("Every saved model re-scored by `python -m bench.evaluate` (no training), with the greyscale baseline; "
         "files in `evaluations/<set>/`.")


def sections(run_dir, main_board: pd.DataFrame | None = None, n_boot: int | None = None,
             metric: str | pstats.Metric = "psnr", tables: dict[str, pd.DataFrame] | None = None
             ) -> list[tuple[str, str, pd.DataFrame]]:
    """(heading, note, table) of each other test set's ranking and of the cross-set summary (ranks, then Spearman);
    empty when the run was scored on its own test set only.

    Args:
        run_dir: the run folder.
        main_board: the leaderboard of the run's own test set, if already built.
        n_boot: bootstrap resamples of the per-set comparisons.
        metric: the ranking metric.
        tables: :func:`boards` of the run, if already built (they are not built twice).
    """
    if not evaluation_dirs(run_dir):
        return []
    m = pstats.metric(metric)
    if tables is None:
        tables = boards(run_dir, main_board, n_boot, m)
    out = []
    for name, b in list(tables.items())[1:]:
        for group, what in ((leaderboard.AUTOMATIC, ""), (leaderboard.REFERENCE, ", reference-based colorizers")):
            if not b.empty and (b["group"] == group).any():
                out.append((f"Test set: {name}{what}", "", leaderboard.ranking_table(b, group, m)))
    ranks, rho = cross_set(tables)
    if not ranks.empty:
        shown = ranks[["model", "cell"]].copy()
        for name in tables:
            if f"{name} rank" in ranks:
                shown[name] = [f"{int(r)} ({m.fmt(v)})" if pd.notna(r) else f"– ({m.fmt(v)})" if pd.notna(v)
                               else "—" for r, v in zip(ranks[f"{name} rank"], ranks[f"{name} score"])]
        out.append(("Across test sets: rank on each set",
                    f"Each cell's rank ({m.title}) on each test set; the baselines (–) are not ranked.", shown))
    if not rho.empty:
        fmt = rho.assign(rho=[f"{v:+.3f}" if pd.notna(v) else "—" for v in rho["rho"]],
                         p=[f"{v:.3f}" if pd.notna(v) else "—" for v in rho["p"]])
        note = ("Spearman correlation of the cells' scores between two test sets (1: the same ranking), over the "
                "trained cells scored on both (at least 3 for a value; the baselines are left out); p: permutation "
                "test (exact up to 8 cells, else Monte-Carlo).")
        out.append(("Across test sets: rank agreement", note, fmt))
    return out


def markdown(found: list[tuple[str, str, pd.DataFrame]], level: int = 1) -> str:
    """The :func:`sections` as Markdown ("" when there are none)."""
    if not found:
        return ""
    h = "#" * level
    lines = ["", f"{h} Other test sets", "", INTRO, ""]
    for heading, note, table in found:
        lines += [f"{h}# {heading}", ""] + ([note, ""] if note else [])
        lines += [table.to_markdown(index=False, disable_numparse=True), ""]
    return "\n".join(lines)


def write(run_dir, metric: str | pstats.Metric = "psnr") -> tuple[pd.DataFrame, str, dict[str, pd.DataFrame]]:
    """``leaderboard.write`` (the run's own test set), then the other test sets' sections appended to
    ``leaderboard.md``; returns what ``leaderboard.write`` returns and the :func:`boards` (empty without other
    test sets), for a caller that prints them."""
    run_dir = Path(run_dir)
    board, text = leaderboard.write(run_dir, metric=metric)
    tables = boards(run_dir, board, metric=metric) if evaluation_dirs(run_dir) else {}
    extra = markdown(sections(run_dir, board, metric=metric, tables=tables))
    if extra:
        md = (run_dir / "leaderboard.md").read_text()
        atomic_write_text(run_dir / "leaderboard.md", md + extra)
    return board, text, tables
