"""The report's figures (seaborn, PNG). Each function takes the run's tables and writes one file.

``psnr_per_cell`` is the leaderboard's point plot (``psnr.png``); the others are the validation curves, the accuracy/colourfulness
trade-off and the training throughput per model.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from .leaderboard import GREY, ci95


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook")
    return plt, sns


def save_figure(fig, path: Path, dpi: int = 120) -> None:
    """Lay out, write as PNG and close a matplotlib figure (closing frees it: reports draw many)."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


def _label(df: pd.DataFrame) -> pd.Series:
    """Cell label: ``cell``, or ``model / cell`` when the run has several models."""
    single = df.loc[df["cell"] != GREY, "model"].nunique() <= 1  # the greyscale row has model "(none)"
    return df["cell"] if single else df["model"].astype(str) + " / " + df["cell"].astype(str)


def psnr_per_cell(runs: pd.DataFrame, path: Path) -> bool:
    """PSNR per cell: mean with the same 95 % t-interval over seeds as the leaderboard table, one dot per seed, and
    the greyscale baseline as a dashed line. Returns False (nothing written) without successful runs."""
    if runs.empty or not (runs["status"] == "ok").any():
        return False
    plt, sns = _plt()
    ok = runs[runs["status"] == "ok"].copy()
    grey = ok[ok["cell"] == GREY]
    cells = ok[ok["cell"] != GREY].copy()
    cells["label"] = _label(cells)
    summary = cells.groupby("label")["psnr"].agg(["mean", ci95]).sort_values("mean", ascending=False)
    order = summary.index.tolist()
    fig, ax = plt.subplots(figsize=(max(5, 0.9 * len(order) + 2), 4))
    if len(cells):
        x = range(len(order))
        ax.errorbar(x, summary["mean"], yerr=summary["ci95"].fillna(0), fmt="o", color="C0", capsize=6, ms=7,
                    label="mean, 95 % t-CI over seeds")
        sns.stripplot(data=cells, x="label", y="psnr", order=order, ax=ax, color="C0", alpha=0.4, size=4,
                      jitter=0.08)
        ax.set_xticks(list(x), order)
    if len(grey):
        ax.axhline(grey["psnr"].mean(), ls="--", color="grey", label=f"greyscale {grey['psnr'].mean():.2f} dB")
    ax.legend(loc="best", fontsize=8)
    ax.set_xlabel("")
    ax.set_ylabel("test PSNR (dB)")
    ax.set_title("PSNR per cell (dots = seeds)")
    plt.setp(ax.get_xticklabels(), rotation=20, ha="right")
    save_figure(fig, path)
    return True


def val_curves(history: pd.DataFrame, path: Path) -> bool:
    """Validation PSNR over training steps, one line per cell (mean over seeds, 95 % CI band)."""
    if history.empty:
        return False
    plt, sns = _plt()
    h = history.copy()
    for c in ("step", "val_psnr"):
        h[c] = pd.to_numeric(h[c], errors="coerce")
    h["label"] = _label(h)
    fig, ax = plt.subplots(figsize=(7, 4))
    sns.lineplot(data=h, x="step", y="val_psnr", hue="label", errorbar=("ci", 95), marker="o", ax=ax)
    ax.set_xlabel("training step")
    ax.set_ylabel("validation PSNR (dB)")
    ax.set_title("Validation PSNR during training (mean over seeds, 95 % CI)")
    ax.legend(title="", fontsize=8)
    save_figure(fig, path)
    return True


def psnr_vs_colourfulness(runs: pd.DataFrame, path: Path, truth_colourfulness: float | None = None) -> bool:
    """Test PSNR against colourfulness: one small dot per seed, a large marker per cell mean.

    Regression losses tend to predict desaturated, "average" colours: high PSNR, low colourfulness; classification
    losses with rebalancing give vivid colours at a PSNR cost. ``truth_colourfulness`` (mean over the test images)
    is drawn as a vertical line when known.
    """
    ok = runs[runs["status"] == "ok"].copy()
    if ok.empty:
        return False
    plt, sns = _plt()
    ok["label"] = _label(ok)
    means = ok.groupby("label", sort=False)[["psnr", "colourfulness"]].mean().reset_index()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    sns.scatterplot(data=ok, x="colourfulness", y="psnr", hue="label", alpha=0.4, s=25, legend=False, ax=ax)
    sns.scatterplot(data=means, x="colourfulness", y="psnr", hue="label", s=140, marker="D", edgecolor="black",
                    ax=ax)
    for _, r in means.iterrows():
        ax.annotate(r["label"], (r["colourfulness"], r["psnr"]), textcoords="offset points", xytext=(6, 6),
                    fontsize=8)
    if truth_colourfulness is not None:
        ax.axvline(truth_colourfulness, ls="--", color="grey")
        ax.annotate(f"ground truth {truth_colourfulness:.1f}", (truth_colourfulness, ax.get_ylim()[0]),
                    textcoords="offset points", xytext=(4, 6), fontsize=8, color="grey")
    ax.set_xlabel("colourfulness (Hasler & Süsstrunk)")
    ax.set_ylabel("test PSNR (dB)")
    ax.set_title("Accuracy vs. vivid colour (dots: seeds, diamonds: cell means)")
    ax.legend(title="", fontsize=8)
    save_figure(fig, path)
    return True


def throughput(runs: pd.DataFrame, path: Path, bench_rows: pd.DataFrame | None = None) -> bool:
    """Training throughput per model (images/s during the grid's training, mean and 95 % CI over cells × seeds).

    Args:
        runs: the run records (``train_img_per_s`` column).
        path: PNG to write.
        bench_rows: optional rows of ``results/throughput-<device>.csv`` (``bench.throughput``); when given, a
            second panel shows its training and inference rates per model.
    """
    ok = runs[(runs["status"] == "ok") & (runs["cell"] != GREY)].copy()
    if ok.empty or "train_img_per_s" not in ok:
        return False
    plt, sns = _plt()
    ok["train_img_per_s"] = pd.to_numeric(ok["train_img_per_s"], errors="coerce")
    panels = 2 if bench_rows is not None and not bench_rows.empty else 1
    fig, axes = plt.subplots(1, panels, figsize=(4 + 3 * panels, 3.8), squeeze=False)
    ax = axes[0][0]
    sns.barplot(data=ok, x="model", y="train_img_per_s", errorbar=("ci", 95), ax=ax, color="C0")
    ax.set_xlabel("")
    ax.set_ylabel("training images / s")
    dev = ok["device_name"].iloc[0] if "device_name" in ok else ""
    ax.set_title(f"Training throughput in this run\n{dev}", fontsize=9)
    if panels == 2:
        b = bench_rows.copy()
        long = b.melt(id_vars=["model"], value_vars=["train_img_per_s", "infer_img_per_s"], var_name="mode",
                      value_name="img_per_s")
        long["img_per_s"] = pd.to_numeric(long["img_per_s"], errors="coerce")
        long["mode"] = long["mode"].map({"train_img_per_s": "train step", "infer_img_per_s": "inference"})
        sns.barplot(data=long, x="model", y="img_per_s", hue="mode", ax=axes[0][1])
        axes[0][1].set_xlabel("")
        axes[0][1].set_ylabel("images / s")
        r = b.iloc[-1]
        axes[0][1].set_title(f"bench.throughput, synthetic data\n(batch {r.get('batch', '?')}, {r.get('size', '?')} px, "
                             f"{r.get('precision', '?')}, {r.get('device_name', '')})", fontsize=9)
    save_figure(fig, path)
    return True
