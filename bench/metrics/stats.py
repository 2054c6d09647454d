"""Paired comparisons of leaderboard cells on the same test images, generic in the metric.

The data: every cell was trained with one or more seeds, and every run scored the same test images, so a metric
is a table ``X[cell][seed, image]``. Two kinds of claims are made from it, on two levels:

* **These trained networks, on these images** (one level: images). Each image's metric is averaged over the
  cell's seeds (:func:`image_means`), two cells are paired image by image, and the per-image differences
  ``d_i = A_i - B_i`` are tested with a **sign-flip permutation test** (:func:`sign_flip_pvalues`). Under the null
  hypothesis "A and B are exchangeable on every image" each ``d_i`` is as likely to be ``+|d_i|`` as ``-|d_i|``;
  the test compares ``|mean(d)|`` with its distribution over sign flips: all ``2^n`` of them when ``n ≤ 16``
  (exact), else ``N_PERM`` seeded random ones. The p-value is *randomised within ties* (see
  :func:`sign_flip_pvalues`), which makes it uniform under the null at every n, so the test rejects exactly 5 % of
  the time at α = 0.05 — also at n = 6, where a non-randomised exact test can only have size 1/32 or 1/16.
  ``tests/test_stats.py`` checks this by simulation at n = 6, 24 and 100. Decisions (``compare_cells``) use the
  conservative p: a tie-break hash never makes a cell significant.
* **The losses** (two levels: images × seeds). :func:`hierarchical_ci` bootstraps both levels: images are
  resampled (the same images for both cells: they stay paired) and, within each cell, its seeds. The percentile
  interval of the mean difference covers seed-to-seed variation too; with one seed per cell it is an image-level
  interval. With 2–3 seeds the seed level is poorly estimated by any method: the README states the coverage
  measured by simulation.

Several comparisons at once are Holm-adjusted (:func:`holm`). "Worse than the best" is decided within the family
of *all* pairs of cells (:func:`compare_cells`): the best cell is chosen from the same data, so comparing the others
only with it would find "significant" gaps between cells that are in truth equal.

**Metrics** are declared once, in :data:`METRICS` (the metric table): a :class:`Metric` holds the name, the
direction, per-image or per-set, the network it needs (its absence is recorded as ``missing`` in the metric's
``<network>_backbone`` column, the values empty), display name, unit, digits, and where its computation lives
(``bench.metrics.compute`` runs it). Training, ``bench.evaluate``, the baselines, the leaderboard, ``--rank-by``, the
report and the dashboard iterate the table; :func:`metric` returns an entry (unknown names: higher is better). A
new metric is one entry::

    from bench.metrics import stats
    stats.register_metric(stats.Metric("my_metric", higher_is_better=False, label="My metric",
                                       compute=lambda pred, target, net: (pred - target).abs().mean(dim=(1, 2, 3))))

Every difference is ``cell − other`` in the metric's own units; "better" follows ``higher_is_better``.
"""
from __future__ import annotations

import functools
import hashlib
import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
from scipy import stats as sps

from bench.metrics.table import (  # noqa: F401
    METRICS, N_BOOT, NETWORKS, Metric, metric, register_metric, shown_metrics, status_columns, unregister_metric)

ALPHA = 0.05
# N_BOOT (bootstrap resamples of the two-level interval) is declared in bench.metrics.table: report --help shows it
N_PERM = 10_000  # random sign flips when 2^n is too many to enumerate
N_BOOT_SET = 1000  # bootstrap resamples of a per-set metric (each recomputes the metric, e.g. FID)
EXACT_MAX_N = 16  # up to 2^16 = 65,536 sign patterns: enumerate them all
MIN_IMAGES = 20  # fewer test images than this: the verdict warns that comparisons have little power
POWER = 0.80


_metric = metric  # for functions whose argument is called ``metric``


# ----------------------------------------------------------------------------------------------- tables


def ci95(values) -> float:
    """Half-width of the two-sided 95 % Student-t confidence interval of the mean (NaN for fewer than 2 values)."""
    x = pd.Series(values, dtype=float).dropna()
    if len(x) < 2:
        return math.nan
    return float(sps.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))


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


def seed_image_table(per_image: pd.DataFrame, cell, metric: str = "psnr", images=None) -> np.ndarray:
    """``seeds × images`` array of one cell's metric (NaN where a run lacks an image), images in ``images`` order."""
    sub = per_image[(per_image["model"] == cell[0]) & (per_image["cell"] == cell[1])]
    piv = sub.pivot_table(index="seed", columns="image", values=metric, aggfunc="mean")
    if images is not None:
        piv = piv.reindex(columns=list(images))
    return piv.to_numpy(dtype=float)


# ----------------------------------------------------------------------------------------------- the test


def _sign_patterns(n: int) -> np.ndarray:
    """All ``2^n × n`` sign vectors (±1)."""
    bits = (np.arange(2**n)[:, None] >> np.arange(n)[None, :]) & 1
    return (1 - 2 * bits).astype(float)


def _tie_breaks(d: np.ndarray, seed: int) -> np.ndarray:
    """One uniform number per row of ``d``, a function of the seed and the row's bytes: reproducible for the same
    data, and unrelated to the sign-flip ranks (a hash), so a randomised p stays uniform under the null."""
    out = np.empty(len(d))
    for k, row in enumerate(np.ascontiguousarray(d, dtype=float)):
        h = hashlib.blake2b(row.tobytes(), digest_size=8, key=str(seed).encode()).digest()
        out[k] = (int.from_bytes(h, "little") + 0.5) / 2**64
    return out


def sign_flip_pvalues(d, n_perm: int = N_PERM, seed: int = 0, exact_max_n: int = EXACT_MAX_N) -> dict:
    """Two-sided sign-flip permutation test of ``mean(d) = 0`` for each row of ``d`` (vectorised).

    The statistic is ``|Σ d_i|``; its null distribution is that of ``|Σ s_i d_i|`` over sign vectors ``s``: all
    ``2^n`` when ``n ≤ exact_max_n``, else ``n_perm`` random ones (seeded; the observed signs count as one more).
    With ``G`` flips, ``gt`` of them above the observed value and ``eq`` equal to it (the identity included),

    * ``p_conservative = (gt + eq) / G`` — the usual exact p; at small n it takes few values (n = 6: multiples
      of 1/32), so "p ≤ 0.05" rejects only 1/32 = 3.1 % of the time under the null;
    * ``p = (gt + U·eq) / G`` with ``U`` uniform in (0, 1) — the randomised p-value (Lehmann & Romano,
      *Testing Statistical Hypotheses*, §3.2): uniform under the null, so "p ≤ α" has size exactly α at every n.
      ``U`` is drawn from a hash of the seed and the data (:func:`_tie_breaks`): the same numbers always give
      the same p. It differs from ``p_conservative`` only within a tie, i.e. visibly only when ``n`` is small.

    Rows must not contain NaN (drop unpaired images first). ``n < 2`` gives NaN.

    Args:
        d: paired differences, shape ``(n,)`` or ``(rows, n)``.
        n_perm: random sign flips when ``n > exact_max_n``.
        seed: seed of the random flips and of the tie-breaks.
        exact_max_n: enumerate every sign pattern up to this many pairs.

    Returns:
        dict with arrays (or floats for 1-D input) ``p``, ``p_conservative`` and the bool ``exact``.
    """
    d = np.asarray(d, dtype=float)
    one = d.ndim == 1
    d2 = d[None, :] if one else d
    rows, n = d2.shape
    if n < 2:
        nan = np.full(rows, math.nan)
        return {"p": nan[0] if one else nan, "p_conservative": nan[0] if one else nan, "exact": False}
    exact = n <= exact_max_n
    if exact:
        signs = _sign_patterns(n)
    else:
        rng = np.random.default_rng(seed)
        signs = np.vstack([np.ones((1, n)), rng.choice([-1.0, 1.0], size=(n_perm, n))])
    obs = np.abs(d2.sum(axis=1))
    # float sums of the same numbers in another order differ in the last bits: treat those as ties
    tol = 1e-9 * (np.abs(d2).sum(axis=1) + 1e-300)
    gt = np.zeros(rows)
    eq = np.zeros(rows)
    chunk = max(1, 4_000_000 // len(signs))  # keep the flips × rows matrix small
    for s in range(0, rows, chunk):
        null = np.abs(signs @ d2[s : s + chunk].T)  # (flips, rows)
        o, t = obs[s : s + chunk], tol[s : s + chunk]
        gt[s : s + chunk] = (null > o + t).sum(axis=0)
        eq[s : s + chunk] = (np.abs(null - o) <= t).sum(axis=0)
    g = float(len(signs))
    u = _tie_breaks(d2, seed)
    p = (gt + u * eq) / g
    p_cons = (gt + eq) / g
    zero = np.all(d2 == 0, axis=1)  # identical cells: no evidence of any difference
    p[zero], p_cons[zero] = 1.0, 1.0
    if one:
        return {"p": float(p[0]), "p_conservative": float(p_cons[0]), "exact": exact}
    return {"p": p, "p_conservative": p_cons, "exact": exact}


def sign_flip_test(a, b, n_perm: int = N_PERM, seed: int = 0) -> dict:
    """Sign-flip test of paired samples ``a`` and ``b`` (e.g. two cells' seed-averaged metric per test image).

    Args:
        a: metric of cell A per image.
        b: metric of cell B per image, same order; pairs with a NaN on either side are dropped.
        n_perm: random sign flips for more than 16 pairs.
        seed: seed of the flips and tie-breaks.

    Returns:
        dict with ``n`` (pairs), ``diff`` (mean of ``a − b``), ``sd`` (standard deviation of the differences),
        ``p`` (randomised two-sided p-value), ``p_conservative`` and ``exact``.
    """
    d = _diffs(a, b)
    r = sign_flip_pvalues(d, n_perm=n_perm, seed=seed)
    sd = float(d.std(ddof=1)) if len(d) > 1 else math.nan
    return {"n": len(d), "diff": float(d.mean()) if len(d) else math.nan, "sd": sd, **r}


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


def min_detectable_difference(sd: float, n: int, alpha: float = ALPHA, power: float = POWER) -> float:
    """Smallest true mean difference that the two-sided sign-flip test at level ``alpha`` detects with probability
    ``power``, for ``n`` pairs whose differences have standard deviation ``sd`` (normal differences).

    From ``n = 11`` on it is the paired t-test's ``(t_{1−α/2, n−1} + t_{power, n−1}) · sd / √n``, which the sign-flip
    test matches (checked by simulation in the tests). For fewer pairs the sign-flip test's discreteness costs
    power, so the factor is found by simulating the test itself with the conservative p, the one decisions use
    (seeded, cached per n; at n = 6 only six differences of one sign reject). NaN for ``n < 2``; inf when no difference reaches that power (n ≤ 5 at
    α = 0.05 and 80 %: with 2^n sign patterns the smallest possible p is 2/2^n).
    """
    if n < 2 or sd is None or not math.isfinite(sd):
        return math.nan
    return float(_mde_factor(int(n), alpha, power) * sd)


@functools.lru_cache(maxsize=None)
def _mde_factor(n: int, alpha: float, power: float) -> float:
    t_factor = (sps.t.ppf(1 - alpha / 2, n - 1) + sps.t.ppf(power, n - 1)) / math.sqrt(n)
    if n > 10:
        return float(t_factor)
    z = np.random.default_rng(12345).standard_normal((2000, n))  # the same draws for every δ: a smooth search

    def achieved(delta):
        return float((sign_flip_pvalues(z + delta, seed=0)["p_conservative"] <= alpha).mean())

    lo, hi = t_factor, 2 * t_factor  # the t-test's difference is a lower bound: the sign-flip test is not stronger
    while achieved(hi) < power:
        if hi > 64 * t_factor:  # n ≤ 5: even a huge difference is detected too rarely (n = 4: at most 40 %)
            return math.inf
        lo, hi = hi, 2 * hi
    for _ in range(10):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if achieved(mid) >= power else (mid, hi)
    return float(hi)


# ----------------------------------------------------------------------------------------------- two levels


def hierarchical_ci(xa, xb, n_boot: int = N_BOOT, seed: int = 0, level: float = 0.95) -> dict:
    """Two-level bootstrap interval of the mean difference between two cells, over images and seeds.

    Each resample draws ``n`` images with replacement (the same images for both cells, which stay paired) and,
    independently for each cell, its seeds with replacement; the statistic is the mean over the drawn images of
    (A's mean over its drawn seeds − B's mean over its drawn seeds). The percentile interval therefore covers
    both the choice of test images and the training seeds. A cell with one seed (the greyscale baseline)
    contributes no seed-level variation — and a cell trained with one seed hides its own: the interval is then
    an image-level one. Deviations at both levels are rescaled by √(m/(m − 1)) (m = seeds or images), which
    corrects the plain bootstrap's too-short intervals at few seeds or images.

    Args:
        xa: ``seeds × images`` metric of cell A (:func:`seed_image_table`).
        xb: ``seeds × images`` metric of cell B, the same image columns; images missing (NaN) in either cell are
            dropped, and so are seeds with a missing image.
        n_boot: resamples.
        seed: seed of the resampling.
        level: confidence level.

    Returns:
        dict with ``diff`` (observed mean difference of the seed means), ``lo``, ``hi``, ``n_images``,
        ``seeds_a``, ``seeds_b``; NaN bounds for fewer than 2 images.
    """
    xa, xb = np.atleast_2d(np.asarray(xa, float)), np.atleast_2d(np.asarray(xb, float))
    if xa.shape[1] != xb.shape[1]:
        raise ValueError(f"the cells must share image columns, got {xa.shape} and {xb.shape}")
    cols = ~(np.isnan(xa).all(axis=0) | np.isnan(xb).all(axis=0))
    xa, xb = xa[:, cols], xb[:, cols]
    xa, xb = xa[~np.isnan(xa).any(axis=1)], xb[~np.isnan(xb).any(axis=1)]
    n, ka, kb = xa.shape[1], len(xa), len(xb)
    res = {"n_images": n, "seeds_a": ka, "seeds_b": kb, "diff": math.nan, "lo": math.nan, "hi": math.nan}
    if n == 0 or ka == 0 or kb == 0:
        return res
    res["diff"] = float(xa.mean(axis=0).mean() - xb.mean(axis=0).mean())
    if n < 2:
        return res
    rng = np.random.default_rng(seed)
    centre = xa.mean(axis=0) - xb.mean(axis=0)  # per-image difference of the seed means
    # A plain bootstrap of m items has variance (m − 1)/m of the right one, which at 2–3 seeds or a few images
    # makes the interval far too short; deviations are rescaled by √(m/(m − 1)) at both levels (Davison &
    # Hinkley 1997, §2.3 / §3.8) — coverage measured by simulation in the README.
    stats = np.empty(n_boot)
    for s in range(0, n_boot, 1000):  # chunks: memory stays small for many images
        k = min(1000, n_boot - s)
        per_image = centre + _seed_part(rng, k, xa) - _seed_part(rng, k, xb)  # (k, images)
        idx = rng.integers(0, n, size=(k, n))
        stats[s : s + k] = np.take_along_axis(per_image, idx, axis=1).mean(axis=1)
    stats = res["diff"] + math.sqrt(n / (n - 1)) * (stats - res["diff"])
    tail = (1 - level) / 2
    res["lo"], res["hi"] = (float(v) for v in np.quantile(stats, [tail, 1 - tail]))
    return res


def _seed_part(rng, k: int, x: np.ndarray) -> np.ndarray:
    """``k`` resamples of a cell's seeds: each image's mean over the drawn seeds minus its mean over all seeds,
    rescaled by √(m/(m − 1)); zero for a single seed."""
    m = len(x)
    if m == 1:
        return np.zeros((k, x.shape[1]))
    return math.sqrt(m / (m - 1)) * (_count_weights(rng, k, m) @ x - x.mean(axis=0))


def resample_indices(n: int, n_boot: int = N_BOOT_SET, seed: int = 0) -> np.ndarray:
    """``n_boot × n`` image indices drawn with replacement (seeded): the resamples of :func:`paired_set_bootstrap`."""
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def set_bootstrap(stat, n: int, n_boot: int = N_BOOT_SET, seed: int = 0) -> np.ndarray:
    """A per-set statistic on all ``n`` images, then on each resample of :func:`resample_indices` (``1 + n_boot``
    values; ``stat``: ``indices (n,) → value``). Two cells' arrays with the same ``n``, ``n_boot`` and ``seed`` are
    paired: resample k drew the same images for both."""
    idx = resample_indices(n, n_boot, seed) if n >= 2 else np.empty((0, n), dtype=int)
    return np.array([stat(np.arange(n)), *(stat(i) for i in idx)], dtype=float)


def set_interval(va: np.ndarray, vb: np.ndarray, level: float = 0.95) -> dict:
    """``diff`` (a − b on all images) and the percentile interval ``lo``/``hi`` of the paired resamples' differences
    (arrays of :func:`set_bootstrap`)."""
    d = va[1:] - vb[1:]
    d = d[np.isfinite(d)]
    a = (1 - level) / 2
    lo, hi = np.quantile(d, [a, 1 - a]) if len(d) else (math.nan, math.nan)
    return {"diff": float(va[0] - vb[0]), "lo": float(lo), "hi": float(hi)}


def paired_set_bootstrap(stat_a, stat_b, n: int, n_boot: int = N_BOOT_SET, seed: int = 0,
                         level: float = 0.95) -> dict:
    """Paired bootstrap over images of the difference of a per-set statistic (FID, KID, ΔCF) between two cells.

    The same resample of the ``n`` test images is drawn for both (they stay paired), each statistic is recomputed
    on it, and the interval is the percentile interval of ``stat_a(idx) − stat_b(idx)``. There is no per-image
    sign-flip test for a per-set metric: this interval is the comparison.

    Args:
        stat_a, stat_b: ``indices (n,) → value`` (a cell's statistic on the images at those indices; a cell with
            several seeds gives its mean over them).
        n: number of test images.
        n_boot: resamples (:func:`resample_indices`, ``seed``).
        level: interval level.

    Returns:
        ``diff`` (on all images), ``lo``, ``hi``.
    """
    return set_interval(set_bootstrap(stat_a, n, n_boot, seed), set_bootstrap(stat_b, n, n_boot, seed), level)


def _count_weights(rng, k: int, m: int) -> np.ndarray:
    """``k`` bootstrap resamples of ``m`` items as weights summing to 1 (how often each item was drawn / m)."""
    if m == 1:
        return np.ones((k, 1))
    draws = rng.integers(0, m, size=(k, m))
    return (draws[:, :, None] == np.arange(m)).sum(axis=1) / m


# ----------------------------------------------------------------------------------------------- cells


def compare_cells(per_image: pd.DataFrame, best, grey=None, metric: str | Metric = "psnr", n_boot: int = N_BOOT,
                  n_perm: int = N_PERM, seed: int = 0, alpha: float = ALPHA, baselines: dict | None = None
                  ) -> pd.DataFrame:
    """Compare every trained cell with the best cell and with each baseline, image by image.

    Args:
        per_image: rows of ``per_image.csv`` of successful runs (one group of comparable cells).
        best: ``(model, cell)`` of the best cell.
        grey: ``(model, cell)`` of the greyscale baseline, or None (the baseline named ``grey``).
        metric: the per-image metric (name or :class:`Metric`); differences are in its units.
        n_boot: resamples of the two-level interval.
        n_perm: random sign flips per test when there are more than 16 images.
        seed: seed of every test and interval (the same for each comparison: results do not depend on the order
            of the cells).
        alpha: significance level.
        baselines: other baselines, column prefix → ``(model, cell)`` (e.g. ``{"mean_colour": ("(none)",
            "mean_colour")}``); compared like grey. Baselines are never trained cells (not in the "best" family).

    Returns:
        One row per cell:

        * ``n_images``, ``n_seeds``;
        * per baseline ``<b>`` (``grey``, ...): ``<b>_diff`` (cell − baseline, per-image seed means), ``<b>_lo``/
          ``<b>_hi`` (two-level CI over images × seeds), ``<b>_sd`` (SD of the per-image differences),
          ``p_<b>_raw`` (sign-flip, randomised), ``p_<b>_conservative``, ``p_<b>`` (Holm over the trained cells
          compared with that baseline, applied to the *conservative* p: a decision never rests on the randomised
          tie-break), ``better_than_<b>`` and ``worse_than_<b>`` (significant at ``alpha`` after Holm, in the
          metric's direction). A baseline's row holds its single, unadjusted comparison with each other baseline;
        * the same ``best_*`` columns against the best cell, where ``p_best`` is Holm-adjusted over *all pairs* of
          trained cells (baselines excluded; this keeps the family-wise error at ``alpha`` although the best cell
          was picked from the same data) and ``worse_than_best`` is its decision; ``best_*`` are empty for the best
          cell. The p-values are the sign-flip test's on the seed-averaged per-image values; the intervals are
          two-level (:func:`hierarchical_ci`).
    """
    m = _metric(metric)
    means = image_means(per_image, m.name)
    cells = list(means.columns)
    best = tuple(best) if best is not None else None
    bases = {"grey": tuple(grey)} if grey is not None else {}
    bases.update({k: tuple(v) for k, v in (baselines or {}).items() if v is not None})
    bases = {k: v for k, v in bases.items() if v in means.columns}
    if not cells:
        return pd.DataFrame()
    rows = {c: {"model": c[0], "cell": c[1], "n_images": int(means[c].notna().sum()),
                "n_seeds": int(per_image[(per_image["model"] == c[0]) & (per_image["cell"] == c[1])]["seed"].nunique())}
            for c in cells}
    ctx = SimpleNamespace(means=means, rows=rows, n_boot=n_boot, n_perm=n_perm, seed=seed, alpha=alpha,
                          sign=1.0 if m.higher_is_better else -1.0,
                          tables={c: seed_image_table(per_image, c, m.name, means.index) for c in cells})
    trained = [c for c in cells if c not in bases.values()]
    for prefix, base in bases.items():
        _against_baseline(ctx, prefix, base, trained, bases)
    if best in means.columns:
        _against_best(ctx, best, trained)
    return _every_column(pd.DataFrame(list(rows.values())), bases)


def _interval(ctx, c, other, prefix: str) -> None:
    """Cell ``c`` − ``other``: the mean per-image difference, its two-level interval and the SD of the
    differences, into ``c``'s row."""
    ci = hierarchical_ci(ctx.tables[c], ctx.tables[other], n_boot=ctx.n_boot, seed=ctx.seed)
    d = _diffs(ctx.means[c].to_numpy(), ctx.means[other].to_numpy())
    ctx.rows[c].update({f"{prefix}_diff": float(d.mean()) if len(d) else math.nan, f"{prefix}_lo": ci["lo"],
                        f"{prefix}_hi": ci["hi"], f"{prefix}_sd": float(d.std(ddof=1)) if len(d) > 1 else math.nan})


def _against_baseline(ctx, prefix: str, base, trained: list, bases: dict) -> None:
    """Every trained cell against one baseline: one family of tests (Holm on the conservative p); every other
    baseline against it with one test, in no family."""
    means = ctx.means
    tests = [sign_flip_test(means[c].to_numpy(), means[base].to_numpy(), n_perm=ctx.n_perm, seed=ctx.seed)
             for c in trained]
    results = list(zip(trained, tests, holm([t["p_conservative"] for t in tests])))
    for b in bases.values():
        if b != base:
            t = sign_flip_test(means[b].to_numpy(), means[base].to_numpy(), n_perm=ctx.n_perm, seed=ctx.seed)
            results.append((b, t, t["p_conservative"]))
    for c, t, p in results:
        _interval(ctx, c, base, prefix)
        better = ctx.sign * ctx.rows[c][f"{prefix}_diff"] > 0
        ctx.rows[c].update({f"p_{prefix}_raw": t["p"], f"p_{prefix}_conservative": t["p_conservative"],
                            f"p_{prefix}": p, f"better_than_{prefix}": bool(p < ctx.alpha and better),
                            f"worse_than_{prefix}": bool(p < ctx.alpha and not better)})


def _against_best(ctx, best, trained: list) -> None:
    """Every trained cell against the best: Holm over every pair of trained cells, because the best was picked from
    these same data."""
    means = ctx.means
    pairs = [(i, j) for k, i in enumerate(trained) for j in trained[k + 1 :]]
    tests = {pair: sign_flip_test(means[pair[0]].to_numpy(), means[pair[1]].to_numpy(), n_perm=ctx.n_perm,
                                  seed=ctx.seed) for pair in pairs}
    adj = dict(zip(pairs, holm([t["p_conservative"] for t in tests.values()])))
    for c in trained:
        if c == best:
            continue
        pair = (c, best) if (c, best) in tests else (best, c)
        _interval(ctx, c, best, "best")
        p = adj[pair]
        ctx.rows[c].update(p_best_raw=tests[pair]["p"], p_best_conservative=tests[pair]["p_conservative"], p_best=p,
                           worse_than_best=bool(p < ctx.alpha and ctx.sign * ctx.rows[c]["best_diff"] < 0))


def _every_column(out: pd.DataFrame, bases: dict) -> pd.DataFrame:
    """Every comparison column exists, empty (or False) where there was nothing to compare."""
    for fam in ("grey", *bases, "best"):
        for col in (f"{fam}_diff", f"{fam}_lo", f"{fam}_hi", f"{fam}_sd", f"p_{fam}_raw", f"p_{fam}_conservative",
                    f"p_{fam}"):
            if col not in out:
                out[col] = math.nan
    for col in ("better_than_grey", "worse_than_grey", "worse_than_best",
                *(f"{w}_than_{b}" for b in bases for w in ("better", "worse"))):
        out[col] = out[col].fillna(False).astype(bool) if col in out else False
    return out


def _diffs(a, b) -> np.ndarray:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired samples must have the same length, got {a.shape} and {b.shape}")
    d = a - b
    return d[~np.isnan(d)]
