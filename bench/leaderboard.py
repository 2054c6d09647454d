"""Leaderboard: per-cell PSNR mean ± 95 % confidence interval over seeds, ranked, with the greyscale baseline."""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
from scipy import stats

from . import stats as pstats
from .records import atomic_write_text, read_rows

GREY = "grey"
METRICS = ("psnr", "ssim", "colourfulness")


def ci95(values) -> float:
    """Half-width of the two-sided 95 % Student-t confidence interval of the mean (NaN for fewer than 2 values)."""
    x = pd.Series(values, dtype=float).dropna()
    if len(x) < 2:
        return math.nan
    return float(stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))


def load_runs(run_dir: Path) -> pd.DataFrame:
    """The run records of a run folder as a DataFrame (numeric columns converted)."""
    rows = read_rows(Path(run_dir) / "runs.csv")
    df = pd.DataFrame(rows)
    for col in df.columns:
        if col in METRICS or col in ("seed", "val_psnr", "train_time_s", "train_img_per_s", "steps", "failed_step",
                                     "style_weight", "lr", "psnr_ref_other"):
            df[col] = pd.to_numeric(df[col], errors="coerce")
    return df


def load_per_image(run_dir: Path) -> pd.DataFrame:
    """The per-image test metrics of a run folder (``per_image.csv``) as a DataFrame; empty if there is none."""
    df = pd.DataFrame(read_rows(Path(run_dir) / "per_image.csv"))
    for col in (*METRICS, "seed", "psnr_ref_other"):
        if col in df:
            df[col] = pd.to_numeric(df[col], errors="coerce")
    return df


def build(df: pd.DataFrame, per_image: pd.DataFrame | None = None, n_boot: int = pstats.N_BOOT
          ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(leaderboard of successful cells ranked by mean PSNR, table of failed runs).

    Args:
        df: the run records (``load_runs``).
        per_image: the per-image metrics (``load_per_image``); when given, every cell is compared with the best
            cell and with the greyscale baseline on the same test images (``bench.stats.compare_cells``), adding
            the columns ``best_diff``, ``best_lo``, ``best_hi``, ``p_best`` (Holm-adjusted), ``p_best_wilcoxon``,
            ``tied``, ``grey_lo``, ``grey_hi``, ``p_grey`` and ``p_grey_wilcoxon``.
        n_boot: bootstrap resamples per comparison.
    """
    if df.empty:
        return pd.DataFrame(), pd.DataFrame()
    ok = df[df["status"] == "ok"]
    failed = df[df["status"] != "ok"]
    extra = [c for c in ("style_weight", "skips") if c in df.columns and df[c].astype(str).str.len().gt(0).any()]
    keys = ["model", "cell"]
    rows = []
    for (model, cell), g in ok.groupby(keys, sort=False):
        row = {"model": model, "cell": cell, "loss": g["loss"].iloc[0]}
        for c in extra:
            row[c] = g[c].iloc[0]
        row["n"] = len(g)
        for m in METRICS:
            row[f"{m}_mean"] = g[m].mean()
        row["psnr_ci95"] = ci95(g["psnr"])
        row["encoder_pretrained"] = g["encoder_pretrained"].iloc[0] if "encoder_pretrained" in g else ""
        rows.append(row)
    board = pd.DataFrame(rows)
    if board.empty:
        return board, failed
    grey = board.loc[board["cell"] == GREY, "psnr_mean"]
    if len(grey):
        board["delta_grey_db"] = board["psnr_mean"] - grey.iloc[0]
    board = board.sort_values("psnr_mean", ascending=False, kind="stable").reset_index(drop=True)
    board.insert(0, "rank", range(1, len(board) + 1))
    if per_image is not None and not per_image.empty:
        board = _add_comparisons(board, ok, per_image, n_boot)
    return board, failed


def best_cell(board: pd.DataFrame) -> tuple[str, str] | None:
    """(model, cell) of the highest mean PSNR among the trained cells (the greyscale baseline excluded)."""
    trained = board[board["cell"] != GREY]
    if trained.empty:
        return None
    top = trained.iloc[0]
    return top["model"], top["cell"]


def _add_comparisons(board: pd.DataFrame, ok: pd.DataFrame, per_image: pd.DataFrame, n_boot: int) -> pd.DataFrame:
    best = best_cell(board)
    if best is None:
        return board
    # only the per-image rows of successful runs count (a failed seed writes none, but be safe)
    done = ok[["model", "cell", "seed"]].astype(str).drop_duplicates()
    pi = per_image.astype({"model": str, "cell": str, "seed": str}).merge(done, on=["model", "cell", "seed"])
    grey = board.loc[board["cell"] == GREY, ["model", "cell"]]
    grey_key = tuple(grey.iloc[0]) if len(grey) else None
    cmp = pstats.compare_cells(pi, best, grey_key, n_boot=n_boot)
    if cmp.empty:
        return board
    keep = [c for c in ("model", "cell", "n_images", "best_diff", "best_lo", "best_hi", "p_best", "p_best_wilcoxon",
                        "tied", "grey_lo", "grey_hi", "p_grey", "p_grey_wilcoxon") if c in cmp]
    return board.merge(cmp[keep], on=["model", "cell"], how="left")


def _fmt_board(board: pd.DataFrame) -> pd.DataFrame:
    out = pd.DataFrame()
    out["rank"] = board["rank"]
    out["model"] = board["model"]
    out["cell"] = board["cell"]
    out["loss"] = board["loss"]
    for c in ("style_weight", "skips"):
        if c in board:
            out[c] = ["" if pd.isna(v) else v for v in board[c]]  # cells without the parameter: blank, not nan
    out["PSNR (dB)"] = [f"{m:.2f} ± {c:.2f}" if not math.isnan(c) else f"{m:.2f}" for m, c in
                        zip(board["psnr_mean"], board["psnr_ci95"])]
    if "delta_grey_db" in board:
        out["Δ grey (dB)"] = [f"{d:+.2f}" for d in board["delta_grey_db"]]
    if "p_best" in board:
        best = best_cell(board)
        is_best = [(m, c) == best for m, c in zip(board["model"], board["cell"])]
        out["vs best (dB, 95 % CI)"] = ["—" if b else _fmt_ci(d, lo, hi) for b, d, lo, hi in
                                        zip(is_best, board["best_diff"], board["best_lo"], board["best_hi"])]
        out["p vs best"] = [_fmt_p(p) for p in board["p_best"]]
        out["tied"] = ["best" if b else ("tied" if not pd.isna(t) and bool(t) else "")
                       for b, t in zip(is_best, board["tied"])]
    if "p_grey" in board:
        out["vs grey 95 % CI"] = [_fmt_ci(None, lo, hi) for lo, hi in zip(board["grey_lo"], board["grey_hi"])]
        out["p vs grey"] = [_fmt_p(p) for p in board["p_grey"]]
    out["SSIM"] = [f"{v:.4f}" for v in board["ssim_mean"]]
    out["colourfulness"] = [f"{v:.1f}" for v in board["colourfulness_mean"]]
    out["n"] = board["n"]
    out["pretrained"] = board["encoder_pretrained"]
    return out


def _fmt_ci(d, lo, hi) -> str:
    if lo is None or pd.isna(lo):
        return "" if d is None or pd.isna(d) else f"{d:+.2f}"
    return (f"{d:+.2f} " if d is not None else "") + f"[{lo:+.2f}, {hi:+.2f}]"


def _fmt_p(p) -> str:
    if p is None or pd.isna(p):
        return ""
    return "<0.001" if p < 0.001 else f"{p:.3f}"


STATS_NOTE = ("Paired comparisons use the per-image test PSNR averaged over each cell's seeds, paired by image: "
              "'vs best' is the mean difference to the best cell in dB with its 95 % paired-bootstrap CI "
              f"({pstats.N_BOOT} resamples of the images, seeded), 'p vs best' the bootstrap p-value Holm-adjusted "
              "over the cells (the CI is not adjusted); cells with adjusted p ≥ 0.05 are marked tied with the best. 'vs grey' is the CI of "
              "the difference to the greyscale baseline (unadjusted p).")


def to_markdown(board: pd.DataFrame, failed: pd.DataFrame, title: str = "Leaderboard") -> str:
    """The leaderboard (and failed runs) as a Markdown document."""
    lines = [f"# {title}", "", "PSNR on the test images: mean ± half-width of the 95 % t-interval over seeds "
             "(n seeds); the greyscale row (ab = 0) is deterministic.", ""]
    if "p_best" in board:
        lines += [STATS_NOTE, ""]
    lines.append(_fmt_board(board).to_markdown(index=False, disable_numparse=True) if not board.empty else "(no successful runs yet)")
    if not failed.empty:
        lines += ["", "## Failed runs", ""]
        cols = [c for c in ("model", "cell", "seed", "status", "failed_step", "error") if c in failed]
        shown = failed[cols].copy()
        for c in ("seed", "failed_step"):  # read back as floats (NaN where empty); show whole numbers
            if c in shown:
                shown[c] = [str(int(v)) if pd.notna(v) else "" for v in pd.to_numeric(shown[c], errors="coerce")]
        lines.append(shown.to_markdown(index=False, disable_numparse=True))
    return "\n".join(lines) + "\n"


def write(run_dir: Path, title: str | None = None) -> tuple[pd.DataFrame, str]:
    """Build the leaderboard of a run folder and write ``leaderboard.md``, ``leaderboard.csv`` and ``psnr.png``."""
    run_dir = Path(run_dir)
    df = load_runs(run_dir)
    board, failed = build(df, load_per_image(run_dir))
    md = to_markdown(board, failed, title or f"Leaderboard: {run_dir.name}")
    atomic_write_text(run_dir / "leaderboard.md", md)
    atomic_write_text(run_dir / "leaderboard.csv", board.to_csv(index=False))
    if not df.empty and (df["status"] == "ok").any():
        from .plots import psnr_per_cell  # plots imports this module: import it only when drawing

        psnr_per_cell(df, run_dir / "psnr.png")
    return board, md
