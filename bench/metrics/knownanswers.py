"""What the networks learned: colour beyond a tint on any data, and the known answers of the control data.

Two kinds of evidence that the leaderboard's verdict rests on (``bench.reporting.leaderboard``):

- ``spatial_tests``: is a cell's *spatial colour* (``bench.metrics.compute.spatial_colour``: the correlation of
  predicted and true ab after each image's mean is removed; about 0 for any tint) significantly above a tint's? A
  two-sided sign-flip test of the per-image values (averaged over seeds) against the oracle per-image tint's on the same
  images, Holm-adjusted over the trained cells.
- ``known_answers``: on control data (``bench.data.controls``) every loss has a Bayes-optimal reference row. Each
  trained cell is compared with its own row (pooled PSNR, with a bootstrap interval over images), and every pair of
  cells whose Bayes rows are far apart must show the same order: the two-level interval over images × seeds (a claim
  about the losses) above 0, Bonferroni over the pairs of a metric; a pair of one loss (the negative control: two MSE
  cells with other seeds) must have an interval that covers 0.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd

from bench.core.records import BAYES_PREFIX, ORACLE_TINT, is_untrained
from bench.metrics import stats as pstats

#: A trained cell is "at its Bayes row" when its mean PSNR is within this of the row's (dB).
NEAR_BAYES_DB = 0.5
#: Pairs of cells whose Bayes rows differ by at least this must be ordered as the rows are (per metric, its units);
#: pairs of one loss (the same Bayes row: the negative control) must not differ; other pairs are too close to call
#: for networks that are only near their rows.
EXPECT_ORDER = {"psnr": 0.3, "colourfulness": 3.0}
#: A bins-head cell's other decodings and the Bayes rows they are compared with.
KL_DECODINGS = {"psnr": "", "psnr_t1": "_T1", "psnr_mode": "_mode"}


def _trained(board: pd.DataFrame) -> pd.DataFrame:
    return board[[not is_untrained(c) for c in board["cell"]]]


def spatial_tests(board: pd.DataFrame, per_image: pd.DataFrame, alpha: float = pstats.ALPHA) -> pd.DataFrame:
    """``p_spatial`` (Holm over the trained cells) and ``spatial_above_zero`` for every trained cell of the board;
    the board unchanged when the per-image rows have no ``spatial_colour``.

    The null is a tint: each image's spatial colour r is compared, paired, with the oracle per-image tint's on the
    same image (0 without that row). A constant colour is not exactly 0 once rendered: where (true L, tint) falls
    outside the sRGB gamut, clipping makes the shown colour follow the lightness (the oracle tint's r was 0.06 on the
    bundled Kodak24 at 64 px)."""
    if per_image is None or per_image.empty or "spatial_colour" not in per_image:
        return board
    means = pstats.image_means(per_image, "spatial_colour")
    null_key = next((k for k in means.columns if k[1] == ORACLE_TINT), None)
    null = means[null_key].to_numpy() if null_key is not None else np.zeros(len(means))
    cells = [(m, c) for m, c in zip(_trained(board)["model"], _trained(board)["cell"]) if (m, c) in means.columns]
    tests = [pstats.sign_flip_test(means[k].to_numpy(), null) for k in cells]
    adj = pstats.holm([t["p_conservative"] for t in tests]) if tests else []
    out = {k: (p, bool(p < alpha and t["diff"] > 0)) for k, t, p in zip(cells, tests, adj)}
    board = board.copy()
    keys = list(zip(board["model"], board["cell"]))
    board["p_spatial"] = [out.get(k, (math.nan, False))[0] for k in keys]
    board["spatial_above_zero"] = [out.get(k, (math.nan, False))[1] for k in keys]
    return board


def bayes_row_of(loss: str, loss_params) -> str | None:
    """The reference row (``bench.data.controls.BAYES_ROWS``) a trained cell is compared with on control data: its
    loss's with default parameters, KL's rebalanced row when the loss asks for the colour prior (the registry's
    ``prior_bins``); None for any other loss or parameters. ``loss_params``: JSON or a dict."""
    import losses

    from bench.data.controls import BAYES_ROWS

    if isinstance(loss_params, str):
        try:
            loss_params = json.loads(loss_params or "{}")
        except ValueError:
            return None
    params = loss_params if isinstance(loss_params, dict) else {}
    if loss == "kl":
        try:
            return f"{BAYES_PREFIX}kl_rebal" if losses.prior_bins(loss, params) is not None else f"{BAYES_PREFIX}kl"
        except (ValueError, TypeError):
            return None
    row = f"{BAYES_PREFIX}{loss}"
    return row if row in BAYES_ROWS and not params else None


def _cell_rows(board: pd.DataFrame, runs: pd.DataFrame) -> dict:
    """(model, cell) of every trained cell → its Bayes row (only the cells that have one on this board)."""
    have = set(board["cell"])
    out = {}
    for _, r in _trained(board).iterrows():
        g = runs[(runs["model"] == r["model"]) & (runs["cell"] == r["cell"])]
        row = bayes_row_of(r["loss"], g["loss_params"].iloc[0] if "loss_params" in g and len(g) else "{}")
        if row in have:
            out[(r["model"], r["cell"])] = row
    return out


def _bayes_key(board: pd.DataFrame, row: str):
    hit = board[board["cell"] == row]
    return (hit["model"].iloc[0], row) if len(hit) else None


def _pooled(psnr: np.ndarray) -> float:
    """Pooled PSNR of per-image PSNRs (images of one size): −10 log10 of the mean of their MSEs."""
    mse = float(np.mean(10 ** (-np.asarray(psnr, float) / 10)))
    return -10 * math.log10(mse) if mse > 0 else math.inf


def _image_mse(per_image: pd.DataFrame, key, col: str) -> pd.Series:
    """Each image's MSE (from its PSNR) averaged over a cell's seeds."""
    sub = per_image[(per_image["model"] == key[0]) & (per_image["cell"] == key[1])].copy()
    sub["_mse"] = 10 ** (-pd.to_numeric(sub[col], errors="coerce") / 10)
    return sub.groupby("image")["_mse"].mean()


def near_bayes(board: pd.DataFrame, runs: pd.DataFrame, per_image: pd.DataFrame, n_boot: int = 2000,
               seed: int = 0) -> pd.DataFrame:
    """One row per (trained cell, decoding) with a Bayes row: the cell's and the row's **pooled** PSNR (the Bayes
    rows minimise the expected loss over all test pixels; with an uneven share of B between images a per-image
    mean has no Bayes bound), their difference with a 95 % bootstrap interval over the test images, and whether
    it is within :data:`NEAR_BAYES_DB`."""
    rows = []
    rng = np.random.default_rng(seed)
    for key, brow in _cell_rows(board, runs).items():
        # plain KL has rows for its other decodings too (rebalanced KL only for the annealed mean)
        for col, suffix in KL_DECODINGS.items() if brow == f"{BAYES_PREFIX}kl" else [("psnr", "")]:
            target = _bayes_key(board, brow + suffix)
            if target is None or col not in per_image:
                continue
            both = pd.concat([_image_mse(per_image, key, col), _image_mse(per_image, target, "psnr")], axis=1,
                             keys=["cell", "bayes"]).dropna()
            if both.empty:
                continue
            a, b = both["cell"].to_numpy(), both["bayes"].to_numpy()
            diff = 10 * math.log10(b.mean() / a.mean()) if a.mean() > 0 and b.mean() > 0 else math.nan
            idx = rng.integers(0, len(a), size=(n_boot, len(a)))
            boot = 10 * np.log10(b[idx].mean(1) / np.maximum(a[idx].mean(1), 1e-300))
            lo, hi = np.quantile(boot, [0.025, 0.975])
            rows.append({"model": key[0], "cell": key[1], "decoding": col, "bayes_row": target[1],
                         "cell_psnr": -10 * math.log10(a.mean()), "bayes_psnr": -10 * math.log10(max(b.mean(), 1e-300)),
                         "diff": diff, "lo": float(lo), "hi": float(hi), "near": bool(abs(diff) <= NEAR_BAYES_DB)})
    return pd.DataFrame(rows)


def orderings(board: pd.DataFrame, runs: pd.DataFrame, per_image: pd.DataFrame, metric: str,
              alpha: float = pstats.ALPHA, n_boot: int = pstats.N_BOOT) -> pd.DataFrame:
    """Every pair of trained cells with Bayes rows, on one per-image metric: the Bayes rows' difference, what it
    predicts (``>``, ``=`` or ``?`` when too close to call), the cells' paired difference and its two-level
    interval over images × seeds (a claim about the losses: two cells of one loss with other seeds are different
    networks), and whether the known answer was recovered: for ``>`` the interval lies above 0 (at level
    1 − α/k for the k ordered pairs of the metric, Bonferroni), for ``=`` the 95 % interval covers 0. The
    sign-flip p of the seed-averaged per-image values (about these networks) is kept beside it."""
    if metric not in per_image:
        return pd.DataFrame()
    cells = _cell_rows(board, runs)
    means = pstats.image_means(per_image, metric)
    score = {c: float(means[_bayes_key(board, b)].mean()) for c, b in cells.items()
             if _bayes_key(board, b) in means.columns}
    keys = [c for c in cells if c in score and c in means.columns]
    pairs = []
    for i, a in enumerate(keys):
        for b in keys[i + 1:]:
            pairs.append((a, b) if score[a] >= score[b] else (b, a))
    expect = {p: "=" if cells[p[0]] == cells[p[1]] else ">" if score[p[0]] - score[p[1]] >= EXPECT_ORDER[metric]
              else "?" for p in pairs}
    k = max(1, sum(e == ">" for e in expect.values()))
    rows = []
    for a, b in pairs:
        level = 1 - alpha / k if expect[(a, b)] == ">" else 1 - alpha
        ci = pstats.hierarchical_ci(pstats.seed_image_table(per_image, a, metric, means.index),
                                    pstats.seed_image_table(per_image, b, metric, means.index), n_boot=n_boot,
                                    level=level)
        t = pstats.sign_flip_test(means[a].to_numpy(), means[b].to_numpy())
        e = expect[(a, b)]
        ok = (ci["lo"] > 0) if e == ">" else (ci["lo"] <= 0 <= ci["hi"]) if e == "=" else None
        rows.append({"metric": metric, "a": a[1], "b": b[1], "bayes_diff": score[a] - score[b], "expect": e,
                     "diff": ci["diff"], "lo": ci["lo"], "hi": ci["hi"], "level": level,
                     "p_networks": t["p_conservative"], "recovered": None if ok is None else bool(ok)})
    return pd.DataFrame(rows)


def known_answers(board: pd.DataFrame, runs: pd.DataFrame, per_image: pd.DataFrame) -> dict:
    """The known-answer checks of a board with Bayes rows: ``near`` (:func:`near_bayes`), ``orderings`` (PSNR and
    colourfulness, :func:`orderings`) and ``lines`` (verdict sentences). Empty when the board has no Bayes row."""
    if board.empty or per_image is None or per_image.empty or \
            not board["cell"].astype(str).str.startswith(BAYES_PREFIX).any():
        return {}
    near = near_bayes(board, runs, per_image)
    orders = pd.concat([orderings(board, runs, per_image, m) for m in EXPECT_ORDER], ignore_index=True)
    lines = []
    if not near.empty:
        main = near[near["decoding"] == "psnr"]
        far = [f"{r['cell']} ({r['diff']:+.2f} dB)" for _, r in main.iterrows() if not r["near"]]
        lines.append(f"Known answers (control data): {int(main['near'].sum())} of {len(main)} trained cells are "
                     f"within {NEAR_BAYES_DB:g} dB of their loss's Bayes-optimal row in pooled PSNR"
                     + (f"; not: {', '.join(far)}" if far else "") + " (table 'Known answers').")
    if not orders.empty:
        checked = orders[orders["expect"] != "?"]
        missed = [f"{r['a']} {'>' if r['expect'] == '>' else '='} {r['b']} ({r['metric']})"
                  for _, r in checked.iterrows() if not r["recovered"]]
        lines.append(f"Known orderings: {sum(bool(r) for r in checked['recovered'])} of {len(checked)} recovered "
                     "(pairs whose Bayes rows differ must differ in the same direction: the two-level interval over "
                     "images × seeds above 0, Bonferroni over the pairs; two cells of one loss must have an "
                     "interval that covers 0)" + (f"; missed: {', '.join(missed)}." if missed else "."))
    return {"near": near, "orderings": orders, "lines": lines}


NOTE = ("Each trained cell against the Bayes-optimal prediction of its own loss, computed from the control "
        "generator's parameters (not trained; bins-head cells also decoded at T = 1 and at the mode, against the "
        f"matching rows). PSNR here is pooled over every test pixel (what a Bayes row is optimal for). *near*: "
        f"|Δ| ≤ {NEAR_BAYES_DB:g} dB; Δ: cell − row, with a 95 % bootstrap interval over the test images. Orderings: the pairs the Bayes rows order (or make equal), with the two-level interval "
        "over images × seeds of the observed difference.")


def tables(answers: dict) -> list[pd.DataFrame]:
    """The known-answer tables as display strings: each cell against its Bayes row, and the orderings."""
    out = []
    near = answers.get("near", pd.DataFrame())
    if not near.empty:
        out.append(pd.DataFrame({
            "cell": near["cell"], "decoding": near["decoding"], "Bayes row": near["bayes_row"],
            "cell pooled PSNR": near["cell_psnr"].map("{:.2f}".format),
            "Bayes pooled PSNR": near["bayes_psnr"].map("{:.2f}".format),
            "Δ [95 % CI]": [f"{d:+.2f} [{lo:+.2f}, {hi:+.2f}]" for d, lo, hi in zip(near["diff"], near["lo"], near["hi"])],
            "near": near["near"].map({True: "yes", False: "no"})}))
    orders = answers.get("orderings", pd.DataFrame())
    if not orders.empty:
        word = {">": "a > b", "=": "a = b", "?": "too close"}
        out.append(pd.DataFrame({
            "metric": orders["metric"], "a": orders["a"], "b": orders["b"],
            "Bayes a − b": orders["bayes_diff"].map("{:+.2f}".format), "expected": orders["expect"].map(word),
            "observed a − b [two-level CI]": [f"{d:+.2f} [{lo:+.2f}, {hi:+.2f}]" for d, lo, hi in
                                              zip(orders["diff"], orders["lo"], orders["hi"])],
            "CI level": orders["level"].map("{:.4f}".format),
            "p, these networks": orders["p_networks"].map(lambda p: "<0.001" if p < 0.001 else f"{p:.3f}"),
            "recovered": ["" if r is None else "yes" if r else "no" for r in orders["recovered"]]}))
    return out


def markdown(answers: dict, heading: str = "##") -> list[str]:
    """The 'Known answers' section of ``leaderboard.md`` (empty without Bayes rows)."""
    if not answers:
        return []
    out = [f"{heading} Known answers (control data)", "", NOTE, ""]
    for t in tables(answers):
        out += [t.to_markdown(index=False, disable_numparse=True), ""]
    return out
