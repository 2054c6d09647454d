"""Leaderboard: cells ranked by a test metric (PSNR by default), with paired statistics and a verdict.

``build`` makes the table (one row per cell; ``leaderboard.csv`` holds every column), ``verdict`` says what the
run can and cannot conclude, ``to_markdown`` renders both for ``leaderboard.md`` and the report, and
``to_terminal`` prints a compact version (at most 100 columns). Reference-based models (a colour reference as
input, e.g. ``adain_unet``) are ranked in their own table, on the metric measured with *another* photo as
reference (``<metric>_ref_other``); their same-photo score is shown as an upper bound only. The two baselines,
grey (ab = 0) and the mean colour (the training pixels' mean ab), are rows that every cell is tested against; they
are never ranked and never "the best".

Any per-image column can be the ranking metric (``metric=``, see :mod:`bench.metrics.stats` for directions and units).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pandas as pd

from bench.config.params import numeric_columns, shown_columns
from bench.core.records import (
    BASELINES, BAYES_PREFIX, GREY, MEAN_COLOUR, ORACLE_TINT, TERMINAL_WIDTH, atomic_write_text, is_untrained,
    read_rows, untrained_mask)
from bench.data.folds import combine_folds, combine_per_image
from bench.metrics import knownanswers
from bench.metrics import stats as pstats
from bench.metrics.stats import ci95
from bench.reporting.plots import psnr_per_cell

AUTOMATIC, REFERENCE = "automatic", "reference"
#: column prefix and short name of each baseline (a row no network trained) in the comparisons and verdicts
BASELINE_PREFIX = {GREY: "grey", MEAN_COLOUR: "mean_colour", ORACLE_TINT: "oracle_tint"}
BASELINE_WORD = {GREY: "grey", MEAN_COLOUR: "mean", ORACLE_TINT: "oracle"}
#: the fewest seeds per cell for the two-level sentence ("a claim about the losses"): below 3 its interval covered
#: 48 % (1 seed) to 89 % (2 seeds) of the time in the README's simulations
MIN_SEEDS_TWO_LEVEL = 3
#: Environment columns that should agree between the runs pooled into one cell: results change with the CPU thread
#: count (the order of float reductions), the device, the CPU's generation and kernels on a CPU run, the torch version,
#: the code and the number of torchrun processes that trained the run (``world_size``: its gradients are averaged
#: over the shards, another order of float sums). Runs that differ are still pooled (a grid spread over unlike machines stays usable), but the cell's
#: ``mixed_env`` names what differs and the leaderboard warns.
POOL_ENV = ("torch_threads", "device", "device_name", "cpu", "torch", "git_commit", "world_size", "plugins")


def mixed_environment(runs: pd.DataFrame) -> str:
    """The ``POOL_ENV`` columns on which the given runs (one cell's seeds) differ, with their values; '' if none."""
    parts = []
    for k in POOL_ENV:
        if k in runs:
            vals = sorted({str(v) for v in runs[k] if not pd.isna(v) and str(v) != ""})
            if len(vals) > 1:
                parts.append(f"{k}: {' / '.join(vals)}")
    return "; ".join(parts)


def mixed_environment_warning(board: pd.DataFrame) -> str | None:
    """One line when cells pool runs from different environments, else None."""
    mixed = board[board["mixed_env"].astype(str).str.len() > 0] if "mixed_env" in board else board.iloc[:0]
    if not len(mixed):
        return None
    return (f"Warning: {len(mixed)} cell(s) pool runs from different environments (column 'mixed environment'; "
            f"e.g. {mixed['cell'].iloc[0]}: {mixed['mixed_env'].iloc[0]}): their seeds are not strictly comparable.")


def _numeric(df: pd.DataFrame, cols) -> pd.DataFrame:
    for col in cols:
        if col in df:
            df[col] = pd.to_numeric(df[col], errors="coerce")
    return df


NUMERIC_RUN_COLS = ("seed", "val_psnr", "train_time_s", "train_img_per_s", "steps", "failed_step", "lr")


def load_runs(run_dir: Path) -> pd.DataFrame:
    """The run records of a run folder as a DataFrame (metric and other numeric columns converted, shown loss and
    model parameters too where every value is a number; the folds of a k-fold run combined into one row per seed,
    ``bench.data.folds``)."""
    df = combine_folds(pd.DataFrame(read_rows(Path(run_dir) / "runs.csv")))
    return _numeric(df, [*NUMERIC_RUN_COLS, *pstats.METRICS, "kid_std", *numeric_columns(df, shown_columns())])


def load_per_image(run_dir: Path) -> pd.DataFrame:
    """The per-image test metrics of a run folder (``per_image.csv``) as a DataFrame; empty if there is none."""
    df = pd.DataFrame(read_rows(Path(run_dir) / "per_image.csv"))
    return combine_per_image(_numeric(df, ["seed", *pstats.METRICS]))


def _is_reference(g: pd.DataFrame) -> bool:
    """A cell whose model takes a colour reference: its runs recorded the other-photo score."""
    return "psnr_ref_other" in g and pd.to_numeric(g["psnr_ref_other"], errors="coerce").notna().any()


def build(df: pd.DataFrame, per_image: pd.DataFrame | None = None, n_boot: int = pstats.N_BOOT,
          metric: str | pstats.Metric = "psnr", n_perm: int = pstats.N_PERM,
          features_dir: Path | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(leaderboard of successful cells, table of failed runs).

    Args:
        df: the run records (``load_runs``).
        per_image: the per-image metrics (``load_per_image``); when given, cells are compared with the greyscale
            baseline and with the best cell on the same test images (``bench.metrics.stats.compare_cells``).
        n_boot: resamples of the two-level (images × seeds) bootstrap interval.
        metric: the ranking metric: a ``per_image.csv``/``runs.csv`` column (``"psnr"``, ``"ssim"``, a metric
            registered in ``bench.metrics.stats.METRICS`` such as ``"lpips"``) or a ``bench.metrics.stats.Metric``; its
            direction decides the order and "better".
        n_perm: random sign flips per test when there are more than 16 test images.
        features_dir: the saved per-image features of the per-set metrics (``<folder>/features``): ranked by a
            per-set metric (FID, KID, ΔCF), cells are compared with grey and the best by a paired bootstrap over
            images (``bench.metrics.stats.paired_set_bootstrap``), without p-values.

    Returns:
        The board has one row per cell: ``group`` (``automatic``, or ``reference`` for models that take a colour
        reference), ``rank`` (within the group), ``model``, ``cell``, ``loss``, ``n`` (seeds), ``<m>_mean`` for
        the ranking metric and PSNR/SSIM/colourfulness, ``<metric>_ci95`` (t-interval over seeds), ``rank_by``
        (the column ranked on: the metric, or ``<metric>_ref_other`` for reference models), ``score``/
        ``score_ci95`` (the ranked value), ``delta_grey`` (score − grey's), and with ``per_image`` the columns of
        ``compare_cells`` (``grey_diff``, ``grey_lo``, ``grey_hi``, ``p_grey``, ``better_than_grey``, ...,
        ``best_*``, ``p_best``, ``worse_than_best``, ``n_images``, ``n_seeds``) and ``verdict`` (words).
    """
    m = pstats.metric(metric)
    if df.empty:
        return pd.DataFrame(), pd.DataFrame()
    ok = df[df["status"] == "ok"]
    failed = df[df["status"] != "ok"]
    if m.name not in ok:
        raise ValueError(f"no column {m.name!r} in the run records to rank by")
    extra = [c for c in shown_columns() if c in df.columns and df[c].astype(str).str.len().gt(0).any()]
    board = pd.DataFrame([_cell_row(model, cell, g, m, extra)
                          for (model, cell), g in ok.groupby(["model", "cell"], sort=False)])
    if board.empty:
        return board, failed
    board = _ranked(board, m)
    if m.per == "set":
        if features_dir is not None:
            board = _add_set_comparisons(board, ok, m, Path(features_dir))
    elif per_image is not None and not per_image.empty:
        board = _add_comparisons(board, ok, per_image, m, n_boot, n_perm)
        board = knownanswers.spatial_tests(board, per_image)
        # the control data's Bayes rows: kept with the board for the verdict and the 'Known answers' section
        board.attrs["known_answers"] = knownanswers.known_answers(board, ok, per_image)
    return board, failed


def _cell_row(model: str, cell: str, g: pd.DataFrame, m: pstats.Metric, extra: list[str]) -> dict:
    """One cell's leaderboard row from its runs ``g``: means over seeds, intervals, the ranked score, provenance."""
    ref = _is_reference(g)
    rank_by = f"{m.name}_ref_other" if ref and f"{m.name}_ref_other" in g else m.name
    row = {"group": REFERENCE if ref else AUTOMATIC, "model": model, "cell": cell, "loss": g["loss"].iloc[0]}
    for c in extra:
        row[c] = g[c].iloc[0]
    row["n"] = len(g)
    summary = list(dict.fromkeys([m.name, *(x.name for x in pstats.shown_metrics())]))
    for s in summary + ([f"{m.name}_ref_other"] if rank_by != m.name else []):
        if s in g:
            row[f"{s}_mean"] = pd.to_numeric(g[s], errors="coerce").mean()
    for s in ("psnr_t1", "psnr_mode"):  # a bins head's logits decoded at T = 1 and at the mode
        if s in g and pd.to_numeric(g[s], errors="coerce").notna().any():
            row[f"{s}_mean"] = pd.to_numeric(g[s], errors="coerce").mean()
    row[f"{m.name}_ci95"] = ci95(g[m.name])
    if "kid_std" in g:  # KID's spread over subsets (mean over seeds)
        row["kid_std_mean"] = pd.to_numeric(g["kid_std"], errors="coerce").mean()
    if "n_test" in g:
        row["n_test"] = pd.to_numeric(g["n_test"], errors="coerce").max()
    if m.name != "psnr":
        row["psnr_ci95"] = ci95(g["psnr"])
    row["rank_by"] = rank_by
    row["score"] = pd.to_numeric(g[rank_by], errors="coerce").mean()
    row["score_ci95"] = ci95(g[rank_by])
    return {**row, **_provenance(cell, g)}


def _provenance(cell: str, g: pd.DataFrame) -> dict:
    """What a cell's row says of how its values were made: pretrained encoder, test resolution, mixed environments,
    an untrained row's mean colour, and the network behind each metric (``<network>_backbone``)."""
    row = {"encoder_pretrained": g["encoder_pretrained"].iloc[0] if "encoder_pretrained" in g else ""}
    if "eval_size" in g:  # the resolution of the test crops, named in every table heading
        row["eval_size"] = g["eval_size"].iloc[0]
    row["mixed_env"] = mixed_environment(g)
    if is_untrained(cell) and "mean_ab" in g:
        row["mean_ab"] = g["mean_ab"].iloc[0] if isinstance(g["mean_ab"].iloc[0], str) else ""
    # the networks behind the values: e.g. lpips_backbone imagenet, random (not a perceptual metric) or missing
    for col in pstats.status_columns():
        row[col] = ",".join(sorted(set(g[col].dropna().astype(str)) - {""})) if col in g else ""
    return row


def _ranked(board: pd.DataFrame, m: pstats.Metric) -> pd.DataFrame:
    """The board with ``delta_<baseline>`` columns, sorted (automatic cells first, best first) and ranked."""
    for base, prefix in BASELINE_PREFIX.items():
        score = board.loc[board["cell"] == base, "score"]
        if len(score):
            board[f"delta_{prefix}"] = board["score"] - score.iloc[0]
    board["_g"] = (board["group"] == REFERENCE).astype(int)
    board = board.sort_values(["_g", "score"], ascending=[True, not m.higher_is_better], kind="stable")
    board = board.drop(columns="_g").reset_index(drop=True)
    # baselines and reference rows keep their place in the order but get no rank: they are not trained cells
    trained = ~untrained_mask(board["cell"])
    board.insert(1, "rank", (board[trained].groupby("group").cumcount() + 1).reindex(board.index).astype("Int64"))
    return board


def _run_features(folder: Path, model, cell, seed, name: str):
    """(image keys, [(pred, truth) per replicate]) of a per-set metric's features for one (cell, seed): a k-fold
    run's folds on their own images joined, folds re-scored on the same images (bench.evaluate) as replicates."""
    from bench.metrics.compute import features_file, load_features

    one = load_features(features_file(folder, model, cell, seed))
    if one is not None and name in one["pred"]:
        return one["images"], [(one["pred"][name], one["truth"][name])]
    parts = []
    for f in range(64):
        d = load_features(features_file(folder, model, cell, seed, f))
        if d is None:
            break
        if name in d["pred"]:
            parts.append(d)
    if not parts:
        return None, []
    if all(p["images"] == parts[0]["images"] for p in parts):
        return parts[0]["images"], [(p["pred"][name], p["truth"][name]) for p in parts]
    import torch

    return ([k for p in parts for k in p["images"]],
            [(torch.cat([p["pred"][name] for p in parts]), torch.cat([p["truth"][name] for p in parts]))])


def _add_set_comparisons(board, ok, m: pstats.Metric, folder: Path) -> pd.DataFrame:
    """Per-set ranking metric: each cell − grey and − the best, with a paired bootstrap interval over the test
    images (no p-value: there is no per-image test of a per-set metric). Cells whose features were not saved here
    (e.g. trained by a worker on another machine) get no interval."""
    import numpy as np
    import torch

    from bench.metrics.compute import set_value

    order, stats_of = None, {}
    for _, r in board.iterrows():
        seeds = ok[(ok["model"] == r["model"]) & (ok["cell"] == r["cell"])]["seed"]
        reps = []
        for seed in pd.to_numeric(seeds, errors="coerce").dropna().astype(int):
            keys, pairs = _run_features(folder, r["model"], r["cell"], seed, m.name)
            if keys is None:
                continue
            if order is None:
                order = list(keys)
            if sorted(keys) != sorted(order):
                continue
            pos = {k: i for i, k in enumerate(keys)}
            perm = torch.tensor([pos[k] for k in order])
            reps.append([(p[perm], t[perm]) for p, t in pairs])
        if reps:
            def stat(idx, reps=reps):
                idx = torch.as_tensor(np.asarray(idx))
                return float(np.mean([np.mean([set_value(m, p[idx], t[idx], resampled=True)
                                               for p, t in rep]) for rep in reps]))
            stats_of[(r["model"], r["cell"])] = (stat, len(reps))
    if not stats_of or order is None:
        return board
    n = len(order)
    boots = {k: pstats.set_bootstrap(st, n) for k, (st, _) in stats_of.items()}
    base_keys = {cell: tuple(board.loc[board["cell"] == cell, ["model", "cell"]].iloc[0])
                 for cell in BASELINES if (board["cell"] == cell).any()}
    rows = []
    for _, r in board.iterrows():
        k = (r["model"], r["cell"])
        row = {"group": r["group"], "model": k[0], "cell": k[1], "n_images": n if k in boots else math.nan,
               "n_seeds": stats_of[k][1] if k in stats_of else math.nan}
        best = best_cell(board, r["group"])
        for fam, other in (("grey", base_keys.get(GREY)), ("mean_colour", base_keys.get(MEAN_COLOUR)),
                           ("best", best)):
            if k in boots and other in boots and other != k and not is_untrained(k[1]):
                ci = pstats.set_interval(boots[k], boots[other])
                row.update({f"{fam}_diff": ci["diff"], f"{fam}_lo": ci["lo"], f"{fam}_hi": ci["hi"]})
        rows.append(row)
    cmp = pd.DataFrame(rows)
    for col in [f"{f}_{x}" for f in ("grey", "mean_colour", "best") for x in ("diff", "lo", "hi")]:
        if col not in cmp:
            cmp[col] = math.nan
    board = board.merge(cmp, on=["group", "model", "cell"], how="left")
    lo, hi = board["grey_lo"], board["grey_hi"]
    board["better_than_grey"] = (lo > 0) if m.higher_is_better else (hi < 0)
    board["worse_than_grey"] = (hi < 0) if m.higher_is_better else (lo > 0)
    board["verdict"] = [_set_verdict_word(r) for _, r in board.iterrows()]
    return board


def _set_verdict_word(r) -> str:
    """Per-cell words of a per-set ranking: whether the bootstrap intervals to grey and to the best exclude 0."""
    if is_untrained(r["cell"]):
        return "reference" if r["cell"] not in BASELINES else "baseline"
    parts = []
    for prefix, word in (("grey", "grey"), ("mean_colour", "mean colour")):
        if not pd.isna(r.get(f"{prefix}_lo", math.nan)):
            parts.append(f"≠ {word}" if r[f"{prefix}_lo"] > 0 or r[f"{prefix}_hi"] < 0 else f"CI spans {word}")
    if r["rank"] == 1:
        parts.append("best")
    elif not pd.isna(r.get("best_lo", math.nan)):
        parts.append("≠ best" if r["best_lo"] > 0 or r["best_hi"] < 0 else "CI spans best")
    return "; ".join(parts)


def best_cell(board: pd.DataFrame, group: str = AUTOMATIC) -> tuple[str, str] | None:
    """(model, cell) of the top-ranked trained cell of a group (the baselines excluded)."""
    if board.empty:
        return None
    trained = board[~untrained_mask(board["cell"]) & (board["group"] == group)]
    if trained.empty:
        return None
    top = trained.iloc[0]
    return top["model"], top["cell"]


def _add_comparisons(board, ok, per_image, m: pstats.Metric, n_boot: int, n_perm: int) -> pd.DataFrame:
    # only the per-image rows of successful runs count (a failed seed writes none, but be safe)
    done = ok[["model", "cell", "seed"]].astype(str).drop_duplicates()
    pi = per_image.astype({"model": str, "cell": str, "seed": str}).merge(done, on=["model", "cell", "seed"])
    base_keys = {}
    for base, prefix in BASELINE_PREFIX.items():
        rows = board.loc[board["cell"] == base, ["model", "cell"]]
        if len(rows):
            base_keys[prefix] = tuple(rows.iloc[0])
    grey_key = base_keys.pop("grey", None)
    parts = []
    for group in (AUTOMATIC, REFERENCE):
        cells = board[(board["group"] == group) & ~board["cell"].astype(str).str.startswith(BAYES_PREFIX)]
        best = best_cell(board, group)
        if cells.empty or best is None:
            continue
        keys = set(zip(cells["model"], cells["cell"])) | {k for k in (grey_key, *base_keys.values()) if k}
        sub = pi[[k in keys for k in zip(pi["model"], pi["cell"])]].copy()
        rank_by = cells.loc[~untrained_mask(cells["cell"]), "rank_by"].iloc[0]
        if rank_by != m.name:  # reference models: their other-photo score against the baselines' (reference-free)
            if rank_by not in sub:
                continue
            is_ref = ~untrained_mask(sub["cell"])
            sub.loc[is_ref, m.name] = pd.to_numeric(sub.loc[is_ref, rank_by], errors="coerce")
        cmp = pstats.compare_cells(sub, best, grey_key, metric=m, n_boot=n_boot, n_perm=n_perm, baselines=base_keys)
        if cmp.empty:
            continue
        cmp["group"] = group
        if group == REFERENCE:
            cmp = cmp[~untrained_mask(cmp["cell"])]  # the baselines' rows belong to the automatic table
        parts.append(cmp)
    if not parts:
        return board
    cmp = pd.concat(parts, ignore_index=True)
    board = board.merge(cmp, on=["group", "model", "cell"], how="left")
    for fam in (*BASELINE_PREFIX.values(), "best"):  # each cell's own minimum detectable difference
        if f"{fam}_sd" in board:
            board[f"mde_{fam}"] = [pstats.min_detectable_difference(sd, int(n)) if pd.notna(n) else math.nan
                                   for sd, n in zip(board[f"{fam}_sd"], board["n_images"])]
    board["verdict"] = [_verdict_word(r) for _, r in board.iterrows()]
    return board


def _flag(r, col) -> bool:
    v = r.get(col)
    return bool(v) if v is not None and not pd.isna(v) else False


def _verdict_word(r) -> str:
    """Short per-cell verdict: significance against each baseline and against the best (Holm, α = 0.05), grouped
    by outcome: ``> grey, mean; n.s. vs best`` (``mean``: the mean-colour baseline)."""
    if is_untrained(r["cell"]):
        return "reference" if r["cell"] not in BASELINES else "baseline"
    groups: dict[str, list[str]] = {}
    for base in BASELINES:  # the oracle tint is a reference: its test is in the verdict sentences and the CSV
        prefix = BASELINE_PREFIX[base]
        if not pd.isna(r.get(f"p_{prefix}", math.nan)):
            out = (">" if _flag(r, f"better_than_{prefix}") else "<" if _flag(r, f"worse_than_{prefix}")
                   else "n.s. vs")
            groups.setdefault(out, []).append(BASELINE_WORD[base])
    if r["rank"] != 1 and not pd.isna(r.get("p_best", math.nan)):
        groups.setdefault("<" if _flag(r, "worse_than_best") else "n.s. vs", []).append("best")
    parts = [f"{out} {', '.join(names)}" for out, names in groups.items()]
    return "; ".join(parts + (["best"] if r["rank"] == 1 else []))


# ----------------------------------------------------------------------------------------------- verdict


def stronger_baseline(board: pd.DataFrame, metric: str | pstats.Metric = "psnr") -> str | None:
    """The better-scoring of the board's baselines (grey, mean colour) on the ranking metric; None without any."""
    m = pstats.metric(metric)
    b = board[board["cell"].isin(BASELINES) & board["score"].notna()] if not board.empty else board
    if b.empty:
        return None
    return str(b.sort_values("score", ascending=not m.higher_is_better, kind="stable")["cell"].iloc[0])


def _baseline_name(board: pd.DataFrame, base: str, full: bool = True) -> str:
    """How a baseline is named in the verdict: ``grey``, or ``the mean colour`` (``full``: with its constant)."""
    if base == GREY:
        return "grey"
    if not full:
        return "the mean colour"
    row = board[board["cell"] == base]
    txt = ""
    if "mean_ab" in row and len(row) and isinstance(row["mean_ab"].iloc[0], str) and row["mean_ab"].iloc[0]:
        try:
            consts = json.loads(row["mean_ab"].iloc[0])
            a, b = (sum(c[i] for c in consts) / len(consts) for i in (0, 1))
            txt = (f" (a constant ab = ({a:.1f}, {b:.1f}), the training pixels' mean"
                   + (", per fold; their average shown" if len(consts) > 1 else "") + ")")
        except (ValueError, TypeError, IndexError, ZeroDivisionError):
            txt = ""
    return "the mean colour" + txt


def verdict(board: pd.DataFrame, metric: str | pstats.Metric = "psnr", alpha: float = pstats.ALPHA,
            group: str | None = None) -> dict:
    """What the run can conclude from the board's paired tests, for one group of cells: the automatic colorizers
    (default), or the reference-based ones (``group="reference"``, or by default when there are no automatic
    ones), whose score is the one with another photo as reference.

    Returns:
        dict with ``better_than_grey``, ``worse_than_grey``, ``better_than_mean_colour``,
        ``worse_than_mean_colour``, ``worse_than_best`` (cell labels), ``best``, ``stronger`` (the stronger
        baseline's cell name), ``beyond_tint`` (cells significantly better than the stronger baseline),
        ``two_level`` (whether the images × seeds sentence is made: every cell has ≥ ``MIN_SEEDS_TWO_LEVEL``
        seeds), ``above_baseline_two_level`` (cells whose images × seeds interval lies on the better side of the
        stronger baseline; empty when not made), ``n_images``, ``seeds`` (min, max over trained cells),
        ``mde_grey``/``mde_mean_colour``/``mde_best`` (minimum detectable difference for a cell with the median
        per-image SD of the differences, 80 % power at ``alpha``), ``warning`` (or None), ``nothing`` (True when
        no comparison is significant) and ``lines`` (the sentences to print). Empty when the board has no paired
        comparisons.
    """
    f = _verdict_facts(board, pstats.metric(metric), alpha, group)
    if f is None:
        return {}
    lines = [*_few_images_sentence(f), *_baseline_sentences(f), *_tint_sentences(f), *_best_sentence(f),
             *_losses_sentence(f), *_mde_sentence(f), *_nothing_sentence(f)]
    return {"group": f.group, "best": f.best, "stronger": f.stronger, "beyond_tint": f.beyond,
            "better_than_stronger": f.above,
            **{k: f.pick[k] for k in ("better_than_grey", "worse_than_grey", "better_than_mean_colour",
                                      "worse_than_mean_colour", "worse_than_best")},
            "two_level": f.two_level_ok, "above_baseline_two_level": f.two_level, "n_images": f.n_images,
            "seeds": f.seeds, "mde_grey": f.mde["grey"], "mde_mean_colour": f.mde["mean_colour"],
            "mde_best": f.mde["best"], "warning": f.warning, "nothing": f.nothing, "lines": lines}


def _verdict_facts(board: pd.DataFrame, m: pstats.Metric, alpha: float, group: str | None):
    """What the verdict's sentences are made of, for one group of cells (a namespace), or None without paired
    comparisons or trained cells."""
    if board.empty or "p_grey" not in board and "p_best" not in board:
        return None

    def trained_of(g):
        return board[(board["group"] == g) & ~untrained_mask(board["cell"])]

    f = SimpleNamespace(board=board, m=m, alpha=alpha, label=_labeler(board))
    f.group = group or (AUTOMATIC if not trained_of(AUTOMATIC).empty else REFERENCE)
    f.trained = trained = trained_of(f.group)
    if trained.empty:
        return None
    f.bases = [b for b in BASELINES if f"p_{BASELINE_PREFIX[b]}" in trained
               and trained[f"p_{BASELINE_PREFIX[b]}"].notna().any()]
    cols = [f"{w}_than_{BASELINE_PREFIX[b]}" for b in f.bases for w in ("better", "worse")] + ["worse_than_best"]
    f.pick = {col: [f.label(r) for _, r in trained.iterrows() if _flag(r, col)] for col in cols}
    for col in ("better_than_grey", "worse_than_grey", "better_than_mean_colour", "worse_than_mean_colour"):
        f.pick.setdefault(col, [])
    f.stronger = stronger_baseline(board[board["cell"].isin(f.bases)], m) if f.bases else None
    f.sp = BASELINE_PREFIX.get(f.stronger, "")
    f.n_images = int(trained["n_images"].max()) if "n_images" in trained else 0
    f.seeds = (int(trained["n"].min()), int(trained["n"].max()))
    f.seeds_txt = f"{f.seeds[0]}" if f.seeds[0] == f.seeds[1] else f"{f.seeds[0]}–{f.seeds[1]}"
    f.two_level_ok = f.seeds[0] >= MIN_SEEDS_TWO_LEVEL
    f.two_level = _two_level_cells(f) if f.two_level_ok else []
    f.mde = _mde_of(trained, f.n_images, alpha)
    f.best, f.best_label = best_cell(board, f.group), f.label(trained.iloc[0])
    f.unit = f" {m.unit}" if m.unit else ""
    f.above = f.pick.get(f"better_than_{f.sp}", []) if f.stronger else []
    f.spatial, f.oracle = _colour_evidence(trained, f.label)
    f.beyond = [x for x in (f.label(r) for _, r in trained.iterrows()) if x in f.spatial or x in f.oracle]
    f.mde_txt = ", ".join(f"{_fmt_mde(v, m)}{f.unit} {w}" for v, w in (
        (f.mde["grey"], "to grey"), (f.mde["mean_colour"], "to the mean colour"), (f.mde["best"], "between cells"))
        if not math.isnan(v))
    f.nothing = not any(f.pick.values())
    f.warning = (f"Warning: only {f.n_images} test images (fewer than {pstats.MIN_IMAGES}): the paired comparisons "
                 "have little power; use a larger test set for conclusions.") if f.n_images < pstats.MIN_IMAGES \
        else None
    return f


def _two_level_cells(f) -> list[str]:
    """The cells whose images × seeds interval lies on the better side of the stronger baseline."""
    sign = 1 if f.m.higher_is_better else -1
    lo, hi = f"{f.sp}_lo", f"{f.sp}_hi"
    return [f.label(r) for _, r in f.trained.iterrows() if lo in r and not pd.isna(r[lo])
            and ((r[lo] > 0) if sign > 0 else (r[hi] < 0))]


def _mde_of(trained: pd.DataFrame, n_images: int, alpha: float) -> dict[str, float]:
    """The minimum detectable difference to grey, to the mean colour and between cells, for a cell with the median
    per-image SD of the differences."""
    mde = {}
    for fam in ("grey", "mean_colour", "best"):
        col = f"{fam}_sd"
        sd = float(trained[col].median()) if col in trained and trained[col].notna().any() else math.nan
        mde[fam] = pstats.min_detectable_difference(sd, n_images, alpha)
    return mde


def _few_images_sentence(f) -> list[str]:
    """The warning of a test set too small for the paired comparisons to have power."""
    return [f.warning] if f.warning else []


def _baseline_sentences(f) -> list[str]:
    """Which cells are significantly better (and worse) than each untrained baseline."""
    how = (f"about these trained networks on these {f.n_images} test images: sign-flip test, conservative p, "
           f"Holm-adjusted, α = {f.alpha:g}")
    lines = []
    for i, base in enumerate(f.bases):
        pre = BASELINE_PREFIX[base]
        lines.append(f"Significantly better than {_baseline_name(f.board, base)}" + (f" ({how})" if i == 0 else "")
                     + ": " + (", ".join(f.pick[f"better_than_{pre}"]) or "none") + ".")
        if f.pick[f"worse_than_{pre}"]:
            lines.append(f"Significantly worse than {_baseline_name(f.board, base, False)}: "
                         + ", ".join(f.pick[f"worse_than_{pre}"]) + ".")
    return lines


def _tint_sentences(f) -> list[str]:
    """Whether the cells above the stronger baseline learned colour or a tint (with more than one baseline)."""
    if len(f.bases) <= 1:
        return []
    score = f.board.loc[f.board["cell"] == f.stronger, "score"].iloc[0]
    return _tint_lines(f.trained, f.above, f.spatial, f.oracle, _baseline_name(f.board, f.stronger, False),
                       f"{f.m.fmt(score)}{f.unit}", f.m)


def _best_sentence(f) -> list[str]:
    """Which cells are significantly worse than the best, and which are not significantly different from it."""
    if len(f.trained) <= 1:
        return []
    worse = f.pick["worse_than_best"]
    ns = [f.label(r) for _, r in f.trained.iloc[1:].iterrows() if not _flag(r, "worse_than_best")]
    return [f"Significantly worse than the best ({f.best_label}; Holm over all pairs of cells): "
            + (", ".join(worse) if worse else "none") + "."
            + (f" Not significantly different from it (n.s., which does not make them equal): "
               f"{', '.join(ns)}." if ns else "")]


def _losses_sentence(f) -> list[str]:
    """What can be said about the losses themselves (images × seeds), or why nothing can."""
    if not (f.stronger and f"{f.sp}_lo" in f.trained):
        return []
    sname = _baseline_name(f.board, f.stronger, False)
    if f.two_level_ok:
        return [f"Over images × seeds (a claim about the losses, not only these trained networks), the 95 % "
                f"two-level interval of the difference to {sname} excludes 0 for: "
                + (", ".join(f.two_level) if f.two_level else "none") + "."]
    return [f"No claim about the losses themselves: with {f.seeds_txt} seed(s) per cell the two-level interval over "
            f"images × seeds is not reported (it needs at least {MIN_SEEDS_TWO_LEVEL} seeds; with 1–2 it covered "
            f"48–89 % instead of 95 % in simulation), so the tests above speak for these trained networks only."]


def _mde_sentence(f) -> list[str]:
    """The smallest differences this run could detect."""
    if not f.mde_txt:
        return []
    return [f"Minimum detectable difference for a cell with the median spread of the per-image differences (80 % "
            f"power, α = {f.alpha:g}, before the Holm adjustment): {f.mde_txt}; each cell's own is in "
            f"leaderboard.csv (mde_* columns)."]


def _nothing_sentence(f) -> list[str]:
    """That nothing can be concluded, when no comparison is significant."""
    if not f.nothing:
        return []
    return [f"Nothing can be concluded from this run: with {f.n_images} test images and {f.seeds_txt} seed(s), "
            f"differences below {f.mde_txt or 'an unknown size'} cannot be detected."]


def _colour_evidence(trained: pd.DataFrame, label) -> tuple[list[str], list[str]]:
    """The cells that learned colours beyond a global tint, by the two kinds of evidence: spatial colour r
    significantly above the oracle tint's (``bench.metrics.knownanswers.spatial_tests``), and significantly better than
    the oracle per-image tint on the ranking metric."""
    return ([label(r) for _, r in trained.iterrows() if _flag(r, "spatial_above_zero")],
            [label(r) for _, r in trained.iterrows() if _flag(r, "better_than_oracle_tint")])


def _tint_lines(trained, above, spatial, oracle, sname: str, score: str, m: pstats.Metric) -> list[str]:
    """The verdict's sentences on what was learned: beating the stronger baseline (the mean colour) shows a
    network learned a tint; only a spatial colour r above a tint's or a win over the oracle per-image tint shows
    colours (``spatial``, ``oracle``: :func:`_colour_evidence`)."""
    beyond = list(dict.fromkeys(spatial + oracle))
    known = ("p_spatial" in trained and trained["p_spatial"].notna().any()) or \
        ("p_oracle_tint" in trained and trained["p_oracle_tint"].notna().any())
    out = []
    if above:
        out.append(f"Significantly better than the stronger baseline ({sname}, {score}): {', '.join(above)}.")
    if beyond:
        out.append(f"Learned colours beyond a global tint: {', '.join(beyond)} (spatial colour r significantly "
                   f"above the oracle per-image tint's: {', '.join(spatial) or 'none'}; significantly better than "
                   f"the oracle per-image tint in {m.label or m.name}: {', '.join(oracle) or 'none'}).")
        if not above:
            out.append(f"None of them is significantly better than the stronger baseline ({sname}, {score}): "
                       "their colours follow the true ones within each image, but do not yet make the error "
                       "smaller than a tint's.")
    elif above and known:
        out.append("None of them shows colours beyond a tint: no spatial colour r is significantly above the "
                   "oracle per-image tint's and no cell beats that tint (each test image's own mean colour), so "
                   "they may have learned a tint per image.")
    elif above:
        out.append("Whether they learned colours or a tint per image is not known: these records have no spatial "
                   "colour figure and no oracle-tint row (re-score with bench.evaluate).")
    else:
        out.append(f"No trained cell is significantly better than the stronger baseline ({sname}, {score})"
                   + ("" if not known else " and none has a spatial colour r significantly above a tint's")
                   + ": this run does not show that any network learned colour beyond a global tint.")
    return out


def set_verdict_lines(board: pd.DataFrame, metric: str | pstats.Metric) -> list[str]:
    """The verdict of a ranking by a per-set metric (FID, KID, ΔCF): bootstrap intervals, no tests."""
    m = pstats.metric(metric)
    trained = board[~untrained_mask(board["cell"])] if not board.empty else board
    if trained.empty:
        return []
    label = _labeler(board)
    col = m.status_column
    if col and col in trained and trained[col].astype(str).eq("missing").all():
        return [f"{m.label or m.name} has no values: its network is missing ({col}=missing); rank by another metric."]
    n = trained["n_images"].max() if "n_images" in trained else math.nan
    if pd.isna(n) and "n_test" in trained:
        n = trained["n_test"].max()
    n_txt = "?" if pd.isna(n) else str(int(n))
    lines = [f"{m.label or m.name} is one value per test set: no per-image test and no p-value; differences "
             f"have a 95 % paired bootstrap interval over the {n_txt} test images ({pstats.N_BOOT_SET} resamples)."]
    if m.name == "fid":
        lines.append(f"FID is biased upwards below a few thousand images ({n_txt} here): compare cells on the same "
                     "images only, never with published FIDs.")
    if m.name == "kid" and "kid_std_mean" in trained:
        sd = trained["kid_std_mean"].median()
        lines.append(f"KID is unbiased; its spread over random subsets of the images (median SD over cells) is "
                     f"{m.fmt(sd)}.")
    if "grey_lo" in trained and trained["grey_lo"].notna().any():
        better = [label(r) for _, r in trained.iterrows() if _flag(r, "better_than_grey")]
        lines.append("Better than grey (interval excludes 0): " + (", ".join(better) if better else "none") + ".")
    else:
        lines.append("No intervals: the per-image features of these runs are not in this folder's features/.")
    return lines


def verdict_lines(board: pd.DataFrame, metric: str | pstats.Metric = "psnr") -> list[str]:
    """The verdict sentences of every group that has trained cells (the reference-based one introduced as such)."""
    if board.empty or "group" not in board:
        return []
    if pstats.metric(metric).per == "set":
        return set_verdict_lines(board, metric)
    out = []
    known = board.attrs.get("known_answers", {}).get("lines", [])
    for group in (AUTOMATIC, REFERENCE):
        v = verdict(board, metric, group=group)
        if not v:
            continue
        lines = v["lines"]
        if group == REFERENCE:
            lines = [s for s in lines if s != v["warning"] or not out]
            lines = ["Reference-based colorizers, scored with another photo as colour reference:"] + lines
        out += lines
        if group == AUTOMATIC:
            out += known
    return out


def _fmt_mde(v: float, m: pstats.Metric) -> str:
    return "∞ (too few images for any difference)" if math.isinf(v) else m.fmt(v)


def _labeler(board: pd.DataFrame):
    """Cell label: ``cell``, or ``model / cell`` when trained cells use several models."""
    multi = board.loc[~untrained_mask(board["cell"]), "model"].nunique() > 1

    def label(r) -> str:
        return f"{r['model']} / {r['cell']}" if multi and not is_untrained(r["cell"]) else str(r["cell"])

    return label


# ----------------------------------------------------------------------------------------------- formatting


def _rank(v) -> str:
    """A rank as shown: the baselines have none ("–")."""
    return "–" if v is None or pd.isna(v) else str(int(v))


def _fmt_ci(d, lo, hi, m: pstats.Metric) -> str:
    if d is None or pd.isna(d):
        return ""
    if lo is None or pd.isna(lo):
        return m.fmt(d, True)
    return f"{m.fmt(d, True)} [{m.fmt(lo, True)}, {m.fmt(hi, True)}]"


def _fmt_p(p) -> str:
    if p is None or pd.isna(p):
        return ""
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _mean_pm(mean, ci, m: pstats.Metric) -> str:
    if mean is None or pd.isna(mean):
        return ""
    return f"{m.fmt(mean)} ± {m.fmt(ci)}" if ci is not None and not pd.isna(ci) else m.fmt(mean)


def ranking_table(board: pd.DataFrame, group: str = AUTOMATIC, metric: str | pstats.Metric = "psnr") -> pd.DataFrame:
    """The ranking of one group as display strings: rank, cell, score ± over seeds, differences with their
    images × seeds intervals and Holm-adjusted p-values, verdict."""
    m = pstats.metric(metric)
    b = board[board["group"] == group] if "group" in board else board
    if b.empty:
        return pd.DataFrame()
    label = _labeler(board)
    out = pd.DataFrame({"#": [_rank(v) for v in b["rank"]], "cell": [label(r) for _, r in b.iterrows()]})
    if group == REFERENCE:
        ranked_on = b["rank_by"].iloc[0]
        head = f"{m.title}, other-photo reference" if ranked_on != m.name else f"{m.title}, same photo (upper bound)"
        out[f"{head}, ± over seeds"] = [_mean_pm(s, c, m) for s, c in zip(b["score"], b["score_ci95"])]
        if ranked_on != m.name:
            out[f"{m.label or m.name}, same photo as reference (upper bound)"] = [m.fmt(v) for v in b[f"{m.name}_mean"]]
    else:
        out[f"{m.title}, ± over seeds"] = [_mean_pm(s, c, m) for s, c in zip(b["score"], b["score_ci95"])]
    if m.per == "set" and "grey_lo" in b:  # a per-set metric: paired bootstrap over images, no p-values
        for prefix, word in (("grey", "grey"), ("mean_colour", "mean colour"), ("best", "best")):
            if f"{prefix}_lo" in b:
                out[f"Δ {word}, 95 % bootstrap CI over images"] = [
                    _fmt_ci(d, lo, hi, m) for d, lo, hi in zip(b[f"{prefix}_diff"], b[f"{prefix}_lo"], b[f"{prefix}_hi"])]
    else:
        for prefix, word in (("grey", "grey"), ("mean_colour", "mean colour")):
            if f"p_{prefix}" in b:
                out[f"Δ {word}, 95 % CI over images × seeds"] = [
                    _fmt_ci(d, lo, hi, m) for d, lo, hi in zip(b[f"{prefix}_diff"], b[f"{prefix}_lo"], b[f"{prefix}_hi"])]
                out[f"p vs {word}"] = [_fmt_p(p) for p in b[f"p_{prefix}"]]
            elif f"delta_{prefix}" in b:
                out[f"Δ {word}"] = [m.fmt(d, True) for d in b[f"delta_{prefix}"]]
    if "p_best" in b:
        out["Δ best, 95 % CI over images × seeds"] = [_fmt_ci(d, lo, hi, m) for d, lo, hi in
                                                       zip(b["best_diff"], b["best_lo"], b["best_hi"])]
        out["p vs best"] = [_fmt_p(p) for p in b["p_best"]]
    if "verdict" in b:
        out["verdict"] = b["verdict"].fillna("").to_numpy()
    return out.reset_index(drop=True)


def details_table(board: pd.DataFrame) -> pd.DataFrame:
    """The other columns of every cell: model, loss, parameters, every metric of the table (and the backbones of
    their networks), seeds, images, encoder."""
    if board.empty:
        return pd.DataFrame()
    label = _labeler(board)
    out = pd.DataFrame({"cell": [label(r) for _, r in board.iterrows()], "model": board["model"],
                        "loss": board["loss"]})
    for c in shown_columns():  # the loss and model parameters the registries show (bench.config.params)
        if c in board:
            out[c] = ["" if pd.isna(v) else v for v in board[c]]  # cells without the parameter: blank, not nan
    for mm in pstats.shown_metrics():  # every metric of the table
        if f"{mm.name}_mean" in board:
            out[mm.title] = [mm.fmt(v) if not _random_network(mm, r) else "(random backbone)"
                             for (_, r), v in zip(board.iterrows(), board[f"{mm.name}_mean"])]
            if mm.name == "kid" and "kid_std_mean" in board:
                out["KID spread over subsets (SD)"] = [mm.fmt(v) for v in board["kid_std_mean"]]
    for name in ("psnr_t1", "psnr_mode"):  # bins-head cells: the same logits at T = 1 and at the mode
        if f"{name}_mean" in board and board[f"{name}_mean"].notna().any():
            mm = pstats.metric(name)
            out[mm.title] = [mm.fmt(v) for v in board[f"{name}_mean"]]
    out["seeds"] = board["n"].astype(int).astype(str)
    if "n_images" in board:
        out["test images"] = ["" if pd.isna(v) else str(int(v)) for v in board["n_images"]]
    out["pretrained encoder"] = board["encoder_pretrained"].astype(str)
    if mixed_environment_warning(board):
        out["mixed environment"] = board["mixed_env"].astype(str)
    for col in pstats.status_columns():  # the network behind a metric: e.g. LPIPS backbone random / missing
        if col in board and board[col].astype(str).str.len().gt(0).any():
            out[col.replace("_", " ").replace("lpips", "LPIPS").replace("inception", "Inception")] = \
                board[col].fillna("").astype(str)
    return out


def _random_network(m: pstats.Metric, row) -> bool:
    """Whether a row's value of a network metric came from a random backbone (LPIPS on a random VGG-16 is no
    perceptual metric: never shown in its column; the value stays in leaderboard.csv and --rank-by lpips names it)."""
    col = m.status_column
    return bool(col) and "random" in str(row.get(col, "") or "").split(",")


def stats_note(metric: str | pstats.Metric = "psnr", n_boot: int = pstats.N_BOOT) -> str:
    """What every number of the ranking tables is (one paragraph, Markdown)."""
    m = pstats.metric(metric)
    unit = f" ({m.unit})" if m.unit else ""
    return (f"*{m.label or m.name}, ± over seeds*: mean over the training seeds of each run's mean over the test images"
            f"{unit}, ± the half-width of the 95 % Student-t interval over the seeds. Two baselines that no network "
            "trained, never ranked (#: –): *grey* (ab = 0) and the *mean colour* (a constant ab, the mean of the "
            "training images' pixels, per fold with folds: a global tint); and reference rows, never ranked either: the "
            "*oracle tint* (each test image's own mean colour: it sees the answer) and, on control data, each loss's "
            "Bayes-optimal *bayes:* row. *Δ grey*, *Δ mean colour*, *Δ best*: "
            "mean per-image difference (cell − baseline, cell − best; each image's value averaged over the cell's "
            "seeds) with a 95 % **two-level** interval: a bootstrap over test images × training seeds "
            f"({n_boot} resamples, seed 0), so it covers seed-to-seed variation too (a claim about the loss, "
            f"worth making from {MIN_SEEDS_TWO_LEVEL} seeds on). "
            "*p vs grey*, *p vs mean colour*: two-sided **sign-flip permutation test** of the per-image differences "
            f"(exact over all 2^n sign patterns up to {pstats.EXACT_MAX_N} images, else {pstats.N_PERM} seeded "
            "random flips), the conservative p (ties counted in full), Holm-adjusted over the trained cells. "
            "*p vs best*: the same test, Holm-adjusted over **all pairs** of trained cells (the best was "
            "picked from these data). The p-values are about these trained networks on these test images; "
            "**n.s.** = not significant at α = 0.05 (not evidence of equality). "
            + ("Lower is better for this metric. " if not m.higher_is_better else ""))


def ranked_title(board: pd.DataFrame, metric: str | pstats.Metric) -> str:
    """The ranking metric's title naming the backbone of its network when it has one ("LPIPS, random VGG-16: not
    a perceptual metric")."""
    m = pstats.metric(metric)
    col = m.status_column
    sizes = sorted({int(v) for v in pd.to_numeric(board.get("eval_size", pd.Series(dtype=float)), errors="coerce")
                    .dropna()}) if not board.empty else []
    at = f", {'/'.join(str(v) for v in sizes)} px test crops" if sizes else ""
    if not col or col not in board:
        return m.title + at
    return m.backbone_title(v for s in board[col].dropna().astype(str) for v in s.split(",")) + at


def to_markdown(board: pd.DataFrame, failed: pd.DataFrame, title: str = "Leaderboard",
                metric: str | pstats.Metric = "psnr", n_boot: int = pstats.N_BOOT, heading: int = 1) -> str:
    """The verdict, the ranking tables, the details and the failed runs as one Markdown document."""
    m = pstats.metric(metric)
    h = "#" * heading
    lines = [f"{h} {title}", ""]
    if mixed_environment_warning(board):
        lines += [f"**{mixed_environment_warning(board)}**", ""]
    v = verdict_lines(board, m)
    if v:
        lines += [f"{h}# Verdict", ""] + [f"- {s}" for s in v] + [""]
    if board.empty:
        lines.append("(no successful runs yet)")
    else:
        lines += [f"{h}# Ranking by {ranked_title(board, m)}" + (" (automatic colorizers)" if (board["group"] == REFERENCE).any()
                                                 else ""), ""]
        lines += [ranking_table(board, AUTOMATIC, m).to_markdown(index=False, disable_numparse=True), ""]
        if (board["group"] == REFERENCE).any():
            lines += [f"{h}# Reference-based colorizers", "",
                      "These models get a colour photo as input. They are ranked on the score with *another* test "
                      "photo as reference; with the test photo itself as reference (its own colours) the score is an "
                      "upper bound, not comparable with the automatic colorizers above.", "",
                      ranking_table(board, REFERENCE, m).to_markdown(index=False, disable_numparse=True), ""]
        if m.per == "image" and ("p_best" in board or "p_grey" in board):
            lines += [stats_note(m, n_boot), ""]
        lines += knownanswers.markdown(board.attrs.get("known_answers", {}), f"{h}#")
        lines += [f"{h}# Details", "", details_table(board).to_markdown(index=False, disable_numparse=True), ""]
    if not failed.empty:
        lines += [f"{h}# Failed runs", ""]
        cols = [c for c in ("model", "cell", "seed", "status", "failed_step", "error") if c in failed]
        shown = failed[cols].copy()
        for c in ("seed", "failed_step"):  # read back as floats (NaN where empty); show whole numbers
            if c in shown:
                shown[c] = [str(int(v)) if pd.notna(v) else "" for v in pd.to_numeric(shown[c], errors="coerce")]
        lines += [shown.to_markdown(index=False, disable_numparse=True), ""]
    return "\n".join(lines)


def to_terminal(board: pd.DataFrame, failed: pd.DataFrame | None = None, metric: str | pstats.Metric = "psnr",
                width: int = TERMINAL_WIDTH) -> str:
    """A compact leaderboard for the terminal (at most ``width`` columns; intervals and details are in the files):
    rank, cell, score ± over seeds, Δ grey and its p, Δ best and its p, verdict; then the verdict sentences."""
    import textwrap

    m = pstats.metric(metric)
    if board.empty:
        return "(no successful runs yet)\n"
    label = _labeler(board)
    out = []
    bayes = board[board["cell"].astype(str).str.startswith(BAYES_PREFIX)]
    for group in (AUTOMATIC, REFERENCE):
        b = board[(board["group"] == group) & ~board.index.isin(bayes.index)]  # the Bayes rows: one line below
        if b.empty:
            continue
        head = ["#", "cell", m.label or m.name, "±seeds", "Δgrey", "p", "Δmean", "p", "Δbest", "p", "verdict"]
        rows = [[_rank(r["rank"]), label(r), m.fmt(r["score"]), m.fmt(r["score_ci95"]),
                 m.fmt(r.get("grey_diff", r.get("delta_grey")), True), _fmt_p(r.get("p_grey")),
                 m.fmt(r.get("mean_colour_diff", r.get("delta_mean_colour")), True), _fmt_p(r.get("p_mean_colour")),
                 m.fmt(r.get("best_diff"), True), _fmt_p(r.get("p_best")), str(r.get("verdict", "") or "")]
                for _, r in b.iterrows()]
        keep = [i for i in range(len(head)) if any(row[i] for row in rows) or i < 3]
        head, rows = [head[i] for i in keep], [[row[i] for i in keep] for row in rows]
        widths = [max(len(head[i]), *(len(r[i]) for r in rows)) for i in range(len(head))]
        # too wide: the ±seeds column goes first (it is in leaderboard.md), then the cell names are cut with "…"
        if sum(widths) + 2 * (len(widths) - 1) > width and "±seeds" in head:
            k = head.index("±seeds")
            head, rows, widths = head[:k] + head[k + 1:], [r[:k] + r[k + 1:] for r in rows], widths[:k] + widths[k + 1:]
        ci = head.index("cell")
        excess = sum(widths) + 2 * (len(widths) - 1) - width
        if excess > 0:
            widths[ci] = max(8, widths[ci] - excess)
        title = (f"{ranked_title(board, m)}" + (f", ranked on the other-photo score ({b['rank_by'].iloc[0]})"
                                 if group == REFERENCE else "")
                 + (" — lower is better" if not m.higher_is_better else ""))
        out.append(("Reference-based colorizers: " if group == REFERENCE else "Leaderboard: ") + title)

        def fmt(cells):
            parts = []
            for i, c in enumerate(cells):
                c = c if len(c) <= widths[i] else c[: widths[i] - 1] + "…"
                parts.append(c.ljust(widths[i]) if i in (1, len(cells) - 1) else c.rjust(widths[i]))
            return "  ".join(parts).rstrip()

        out += [fmt(head), "-" * min(width, len(fmt(head)))] + [fmt(r) for r in rows] + [""]
        if group == AUTOMATIC and len(bayes):
            out += textwrap.wrap("Bayes-optimal rows (known answers, not trained; table in leaderboard.md): " + ", ".join(
                f"{r['cell']} {m.fmt(r['score'])}" for _, r in bayes.iterrows()), width) + [""]
    if failed is not None and not failed.empty:
        out += [f"{len(failed)} failed run(s): " + ", ".join(f"{r['cell']} seed {r['seed']}"
                                                             for _, r in failed.iterrows()), ""]
    v = verdict_lines(board, m)
    if v:
        out.append("Verdict:")
        for s in v:
            out += textwrap.wrap(s, width, initial_indent="- ", subsequent_indent="  ")
    if mixed_environment_warning(board):
        out.append(mixed_environment_warning(board))
    return "\n".join(out) + "\n"


def write(run_dir: Path, title: str | None = None, metric: str | pstats.Metric = "psnr") -> tuple[pd.DataFrame, str]:
    """Build the leaderboard of a run folder and write ``leaderboard.md``, ``leaderboard.csv`` and
    ``figures/psnr.png``; returns (board, compact text for the terminal)."""
    run_dir = Path(run_dir)
    df = load_runs(run_dir)
    board, failed = build(df, load_per_image(run_dir), metric=metric, features_dir=run_dir / "features")
    md = to_markdown(board, failed, title or f"Leaderboard: {run_dir.name}", metric)
    atomic_write_text(run_dir / "leaderboard.md", md)
    atomic_write_text(run_dir / "leaderboard.csv", board.to_csv(index=False))
    if not df.empty and (df["status"] == "ok").any():
        (run_dir / "figures").mkdir(exist_ok=True)
        psnr_per_cell(df, run_dir / "figures" / "psnr.png")
    return board, to_terminal(board, failed, metric)
