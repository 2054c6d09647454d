"""k-fold runs seen as one run per seed: the run rows of one (model, cell, seed) from its folds, combined.

With k-fold rotation (``bench.data.sources.fold_splits``) every fold trains its own network and scores it on its own
test images; the folds' test images together are the whole test set. A claim about a cell and a seed is about all of
them, so the leaderboard and the plots see one row per (model, cell, seed): metrics averaged over the folds
weighted by their number of test images (= the mean over every test image), times summed, and status ``ok`` only
when every fold finished ``ok``. Per-image rows need no combining on the run's own test set: an image belongs to one
fold. On another test set (``bench.evaluate``) every fold's network scores every image (the rows say
``fold_test_images=all``): an image's score for a (model, cell, seed) is then the mean over the folds' networks, and
the number of test images is that of the set, not the sum over the folds.
"""
from __future__ import annotations

import math

import pandas as pd

KEY = ["model", "cell", "seed"]
#: the ``fold_test_images`` value of rows whose folds were all scored on the same, whole test set
ALL = "all"
#: columns added up over the folds (the rest: equal in every fold, or averaged weighted by ``n_test``)
SUMMED = ("n_test", "train_time_s", "eval_time_s")
#: decibels of a pooled mean squared error: combined as −10 log10 of the folds' MSEs averaged by ``n_test`` (all the
#: test pixels of the set), not as the mean of the folds' decibels
POOLED_DB = ("psnr_pooled",)


def has_folds(runs: pd.DataFrame) -> bool:
    """Whether any run row belongs to a fold."""
    return "fold" in runs and runs["fold"].astype(str).str.strip().ne("").any()


def combine_folds(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, cell, seed) for the rows of k-fold runs; rows without a fold are kept as they are.

    Args:
        runs: run rows (``runs.csv``), with columns ``fold`` (empty outside k-fold runs) and ``folds`` (k).

    Returns:
        The rows with every complete set of folds replaced by one row: ``fold`` empty, ``n_folds`` = k, metrics
        weighted by ``n_test``, ``SUMMED`` columns added, ``train_img_per_s`` = all images / all training time,
        ``started_at``/``finished_at`` the first start and the last finish. A seed with a failed or missing fold
        is one ``failed`` row whose ``error`` names the folds.
    """
    if runs.empty or not has_folds(runs):
        return runs
    folded = runs["fold"].astype(str).str.strip().ne("")
    out = [runs[~folded]]
    for _, g in runs[folded].groupby(KEY, sort=False):
        out.append(pd.DataFrame([_combine(g)]))
    return pd.concat(out, ignore_index=True)


def _combine(g: pd.DataFrame) -> dict:
    g = g.sort_values("fold", key=lambda s: pd.to_numeric(s, errors="coerce"))
    k = int(pd.to_numeric(g["folds"], errors="coerce").max()) if "folds" in g else len(g)
    weights = pd.to_numeric(g.get("n_test", pd.Series(1, index=g.index)), errors="coerce").fillna(0)
    row = {}
    shared_test = "fold_test_images" in g and g["fold_test_images"].astype(str).eq(ALL).all()
    for col in g.columns:
        vals = g[col]
        if vals.astype(str).nunique() <= 1:
            row[col] = vals.iloc[0]
            continue
        num = pd.to_numeric(vals, errors="coerce")
        if col in SUMMED and not (shared_test and col == "n_test"):
            row[col] = num.sum()
        elif col == "started_at":
            row[col] = vals.astype(str).min()
        elif col == "finished_at":
            row[col] = vals.astype(str).max()
        elif col in POOLED_DB and num.notna().all() and weights.sum() > 0:
            mse = float((10 ** (-num / 10) * weights).sum() / weights.sum())
            row[col] = -10 * math.log10(mse) if mse > 0 else math.inf
        elif num.notna().all() and weights.sum() > 0:
            row[col] = float((num * weights).sum() / weights.sum())
        else:
            row[col] = vals.iloc[0]
    row["fold"], row["n_folds"] = "", k
    ok = g["status"].astype(str).eq("ok") if "status" in g else pd.Series(True, index=g.index)
    if "train_time_s" in g and ok.all():
        imgs = (pd.to_numeric(g["steps"], errors="coerce") * pd.to_numeric(g["batch_size"], errors="coerce")).sum()
        row["train_img_per_s"] = float(imgs / pd.to_numeric(g["train_time_s"], errors="coerce").sum())
    if not ok.all() or len(g) < k:
        bad = [f"fold {f}: {e}" for f, e, s in zip(g["fold"], g.get("error", [""] * len(g)), g["status"]) if s != "ok"]
        missing = sorted(set(range(k)) - set(pd.to_numeric(g["fold"], errors="coerce").dropna().astype(int)))
        bad += [f"fold {f}: not finished" for f in missing]
        row["status"] = "failed"
        row["error"] = "; ".join(bad)
        failed = g.loc[~ok, "failed_step"] if "failed_step" in g else pd.Series(dtype=object)
        row["failed_step"] = failed.iloc[0] if len(failed) else ""
    return row


def combine_per_image(per_image: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, cell, seed, image) for per-image rows scored by several folds' networks (another test
    set, ``bench.evaluate``): their metrics averaged, ``fold`` empty. Rows of an image scored once are kept as they
    are (the run's own test set, where each image belongs to one fold).

    Args:
        per_image: per-image rows (``per_image.csv``) with a ``fold`` column, metric columns already numeric.
    """
    if per_image.empty or "fold" not in per_image or "image" not in per_image:
        return per_image
    key = [c for c in [*KEY, "test_set", "image"] if c in per_image]
    counts = per_image.groupby(key, sort=False)["fold"].transform("size")
    once, many = per_image[counts == 1], per_image[counts > 1]
    if many.empty:
        return per_image
    numeric = [c for c in many.columns if c not in key and c != "fold" and pd.api.types.is_numeric_dtype(many[c])]
    others = [c for c in many.columns if c not in key and c != "fold" and c not in numeric]
    agg = {**{c: "mean" for c in numeric}, **{c: "first" for c in others}}
    merged = many.groupby(key, sort=False).agg(agg).reset_index()
    merged["fold"] = ""
    return pd.concat([once, merged[list(per_image.columns)]], ignore_index=True)
