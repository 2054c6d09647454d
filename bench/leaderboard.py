"""Leaderboard: per-cell PSNR mean ± 95 % confidence interval over seeds, ranked, with the greyscale baseline."""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
from scipy import stats

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


def build(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(leaderboard of successful cells ranked by mean PSNR, table of failed runs)."""
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
    return board, failed


def _fmt_board(board: pd.DataFrame) -> pd.DataFrame:
    out = pd.DataFrame()
    out["rank"] = board["rank"]
    out["model"] = board["model"]
    out["cell"] = board["cell"]
    out["loss"] = board["loss"]
    for c in ("style_weight", "skips"):
        if c in board:
            out[c] = board[c]
    out["PSNR (dB)"] = [f"{m:.2f} ± {c:.2f}" if not math.isnan(c) else f"{m:.2f}" for m, c in
                        zip(board["psnr_mean"], board["psnr_ci95"])]
    if "delta_grey_db" in board:
        out["Δ grey (dB)"] = [f"{d:+.2f}" for d in board["delta_grey_db"]]
    out["SSIM"] = [f"{v:.4f}" for v in board["ssim_mean"]]
    out["colourfulness"] = [f"{v:.1f}" for v in board["colourfulness_mean"]]
    out["n"] = board["n"]
    out["pretrained"] = board["encoder_pretrained"]
    return out


def to_markdown(board: pd.DataFrame, failed: pd.DataFrame, title: str = "Leaderboard") -> str:
    """The leaderboard (and failed runs) as a Markdown document."""
    lines = [f"# {title}", "", "PSNR on the test images: mean ± half-width of the 95 % t-interval over seeds "
             "(n seeds); the greyscale row (ab = 0) is deterministic.", ""]
    lines.append(_fmt_board(board).to_markdown(index=False, disable_numparse=True) if not board.empty else "(no successful runs yet)")
    if not failed.empty:
        lines += ["", "## Failed runs", ""]
        cols = [c for c in ("model", "cell", "seed", "status", "failed_step", "error") if c in failed]
        lines.append(failed[cols].to_markdown(index=False, disable_numparse=True))
    return "\n".join(lines) + "\n"


def plot_psnr(df: pd.DataFrame, path: Path) -> None:
    """Seaborn point plot of PSNR per cell (95 % CI over seeds), the greyscale baseline as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    ok = df[(df["status"] == "ok")].copy()
    ok["label"] = ok["cell"] if ok["model"].nunique() <= 1 else ok["model"] + " / " + ok["cell"]
    grey = ok[ok["cell"] == GREY]
    cells = ok[ok["cell"] != GREY]
    order = cells.groupby("label")["psnr"].mean().sort_values(ascending=False).index.tolist()
    fig, ax = plt.subplots(figsize=(max(5, 0.9 * len(order) + 2), 4))
    if len(cells):
        sns.pointplot(data=cells, x="label", y="psnr", order=order, errorbar=("ci", 95), linestyle="none",
                      capsize=0.2, ax=ax, color="C0")
        sns.stripplot(data=cells, x="label", y="psnr", order=order, ax=ax, color="C0", alpha=0.35, size=4)
    if len(grey):
        ax.axhline(grey["psnr"].mean(), ls="--", color="grey", label=f"greyscale {grey['psnr'].mean():.2f} dB")
        ax.legend(loc="lower right")
    ax.set_xlabel("")
    ax.set_ylabel("test PSNR (dB)")
    ax.set_title("PSNR per cell (mean, 95 % CI over seeds; dots = seeds)")
    plt.setp(ax.get_xticklabels(), rotation=20, ha="right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write(run_dir: Path, title: str | None = None) -> tuple[pd.DataFrame, str]:
    """Build the leaderboard of a run folder and write ``leaderboard.md``, ``leaderboard.csv`` and ``psnr.png``."""
    run_dir = Path(run_dir)
    df = load_runs(run_dir)
    board, failed = build(df)
    md = to_markdown(board, failed, title or f"Leaderboard: {run_dir.name}")
    atomic_write_text(run_dir / "leaderboard.md", md)
    atomic_write_text(run_dir / "leaderboard.csv", board.to_csv(index=False))
    if not df.empty and (df["status"] == "ok").any():
        plot_psnr(df, run_dir / "psnr.png")
    return board, md
