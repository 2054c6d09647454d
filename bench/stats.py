"""Paired comparisons of leaderboard cells on the same test images.

How seeds and images pair: each cell was trained with several seeds and every seed scored the same test images.
For a comparison we first average each image's metric over the cell's seeds (``image_means``), then pair the two
cells image by image and look at the per-image differences ``d_i = A_i - B_i``. The question answered is "on these
test images, does A's (seed-averaged) colorization score higher than B's?"; the spread over training seeds is shown
separately by the ± column of the leaderboard (t-interval of the per-seed means).

Two tests of the paired differences are reported:

* **paired bootstrap** (the primary one): resample the images with replacement ``n_boot`` times (seeded, so the
  numbers are reproducible) and take the mean difference each time. The 95 % CI is the 2.5–97.5 % percentile
  interval; the two-sided p-value is ``2 · min(P*(mean ≤ 0), P*(mean ≥ 0))`` with the usual +1 correction, so the CI
  excludes 0 exactly when p < 0.05 (up to that correction).
* **Wilcoxon signed-rank** (scipy, exact for small n without ties): a rank test that does not care about a few
  images with huge differences.

When one cell is compared against several others, the p-values against the best cell are Holm-adjusted
(``holm``) before deciding which cells are *tied* with the best (adjusted p ≥ α).
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
from scipy import stats as sps

ALPHA = 0.05
N_BOOT = 10_000


def image_means(per_image: pd.DataFrame, metric: str = "psnr", keys=("model", "cell")) -> pd.DataFrame:
    """Per-image metric averaged over seeds: one row per image, one column per cell.

    Args:
        per_image: rows of ``per_image.csv`` (columns ``model``, ``cell``, ``seed``, ``image`` and the metric).
        metric: the column to average.
        keys: the columns that identify a cell; the result's columns are tuples of them.

    Returns:
        DataFrame indexed by image name; a cell missing an image has NaN there.
    """
    df = per_image.copy()
    df[metric] = pd.to_numeric(df[metric], errors="coerce")
    return df.pivot_table(index="image", columns=list(keys), values=metric, aggfunc="mean")


def paired_bootstrap(a, b, n_boot: int = N_BOOT, seed: int = 0, level: float = 0.95) -> dict:
    """Paired bootstrap of the mean difference ``mean(a - b)`` over matched observations (test images).

    Args:
        a: metric of cell A per image.
        b: metric of cell B per image, in the same image order; pairs with a NaN on either side are dropped.
        n_boot: bootstrap resamples.
        seed: seed of the resampling generator (same seed → same CI and p).
        level: confidence level of the percentile interval.

    Returns:
        dict with ``n`` (pairs used), ``diff`` (observed mean difference), ``lo``/``hi`` (percentile CI) and ``p``
        (two-sided bootstrap p-value); NaN values when there are fewer than 2 pairs.
    """
    d = _diffs(a, b)
    n = len(d)
    if n < 2:
        return {"n": n, "diff": float(d.mean()) if n else math.nan, "lo": math.nan, "hi": math.nan, "p": math.nan}
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    # chunks keep memory small for many images without a Python loop per resample
    for s in range(0, n_boot, 1000):
        k = min(1000, n_boot - s)
        means[s : s + k] = d[rng.integers(0, n, size=(k, n))].mean(axis=1)
    tail = (1 - level) / 2
    lo, hi = np.quantile(means, [tail, 1 - tail])
    below, above = int((means <= 0).sum()), int((means >= 0).sum())
    p = min(1.0, 2 * (min(below, above) + 1) / (n_boot + 1))
    if np.all(d == 0):
        p = 1.0  # identical cells: no evidence of any difference
    return {"n": n, "diff": float(d.mean()), "lo": float(lo), "hi": float(hi), "p": float(p)}


def wilcoxon(a, b) -> float:
    """Two-sided p-value of the Wilcoxon signed-rank test of the paired differences ``a - b``.

    Returns 1.0 when every difference is zero (identical cells) and NaN for fewer than 2 pairs.
    """
    d = _diffs(a, b)
    if len(d) < 2:
        return math.nan
    if np.all(d == 0):
        return 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns about ties / small samples; the p-value is still defined
        return float(sps.wilcoxon(d, zero_method="wilcox", alternative="two-sided").pvalue)


def holm(pvalues) -> np.ndarray:
    """Holm–Bonferroni adjusted p-values (NaN entries are left out and stay NaN)."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full_like(p, np.nan)
    ok = ~np.isnan(p)
    q = p[ok]
    m = len(q)
    if m == 0:
        return out
    order = np.argsort(q, kind="stable")
    adj = np.maximum.accumulate((m - np.arange(m)) * q[order])
    res = np.empty(m)
    res[order] = np.minimum(adj, 1.0)
    out[ok] = res
    return out


def compare(means: pd.DataFrame, a, b, n_boot: int = N_BOOT, seed: int = 0) -> dict:
    """Bootstrap and Wilcoxon comparison of columns ``a`` and ``b`` of :func:`image_means`'s table."""
    res = paired_bootstrap(means[a].to_numpy(), means[b].to_numpy(), n_boot=n_boot, seed=seed)
    res["p_wilcoxon"] = wilcoxon(means[a].to_numpy(), means[b].to_numpy())
    return res


def compare_cells(per_image: pd.DataFrame, best, grey=None, metric: str = "psnr", n_boot: int = N_BOOT,
                  seed: int = 0, alpha: float = ALPHA) -> pd.DataFrame:
    """Compare every cell against the best cell and against the greyscale baseline, image by image.

    Args:
        per_image: rows of ``per_image.csv`` of successful runs.
        best: ``(model, cell)`` of the best cell.
        grey: ``(model, cell)`` of the greyscale baseline, or None.
        metric: the per-image metric (PSNR in dB by default).
        n_boot: bootstrap resamples per comparison.
        seed: bootstrap seed (each comparison uses it, so results do not depend on the order of cells).
        alpha: significance level for ``tied``.

    Returns:
        One row per cell: ``model``, ``cell``, ``n_images``, ``best_diff``/``best_lo``/``best_hi`` (cell − best, dB,
        with its bootstrap CI), ``p_best`` (bootstrap, Holm-adjusted over the cells), ``p_best_raw``,
        ``p_best_wilcoxon``, ``tied`` (True for the best cell itself and for cells with ``p_best`` ≥ alpha),
        and the same ``grey_*`` columns against the baseline (unadjusted).
    """
    means = image_means(per_image, metric)
    rows = []
    for col in means.columns:
        row = {"model": col[0], "cell": col[1], "n_images": int(means[col].notna().sum())}
        if col == tuple(best):
            row.update(best_diff=0.0, best_lo=0.0, best_hi=0.0, p_best_raw=math.nan, p_best_wilcoxon=math.nan)
        elif tuple(best) in means.columns and col != grey:
            r = compare(means, col, tuple(best), n_boot, seed)
            row.update(best_diff=r["diff"], best_lo=r["lo"], best_hi=r["hi"], p_best_raw=r["p"],
                       p_best_wilcoxon=r["p_wilcoxon"])
        if grey is not None and tuple(grey) in means.columns and col != tuple(grey):
            r = compare(means, col, tuple(grey), n_boot, seed)
            row.update(grey_diff=r["diff"], grey_lo=r["lo"], grey_hi=r["hi"], p_grey=r["p"],
                       p_grey_wilcoxon=r["p_wilcoxon"])
        rows.append(row)
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    if "p_best_raw" not in out:
        out["p_best_raw"] = math.nan
    out["p_best"] = holm(out["p_best_raw"])
    is_best = (out["model"] == best[0]) & (out["cell"] == best[1])
    is_grey = (out["model"] == grey[0]) & (out["cell"] == grey[1]) if grey is not None else False
    out["tied"] = is_best | (~is_grey & (out["p_best"] >= alpha))
    return out


def _diffs(a, b) -> np.ndarray:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired samples must have the same length, got {a.shape} and {b.shape}")
    d = a - b
    return d[~np.isnan(d)]
