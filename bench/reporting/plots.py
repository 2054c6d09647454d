"""The report's figures (seaborn, PNG). Each function takes the run's tables and writes one file.

``psnr_per_cell`` is the leaderboard's point plot (``figures/psnr.png``); the others are the validation curves, the
accuracy/colourfulness trade-off and the training throughput per model. Every figure colours a cell with
``palette(...)[label]``: built from the run's cell labels alone, so a cell has the same colour in every figure
(and in the sample grid's titles), whichever subset of cells a figure shows.
"""
from __future__ import annotations

import io
from pathlib import Path

import pandas as pd

from bench.core.records import GREY, MEAN_COLOUR, atomic_write_bytes, is_untrained, untrained_mask
from bench.metrics.stats import ci95


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
    buf = io.BytesIO()
    fig.savefig(buf, dpi=dpi, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())  # never a half-written figure (full disk)


GREY_COLOUR = "#7f7f7f"
MEAN_COLOUR_COLOUR = "#b5651d"  # the mean-colour baseline: a brown tint, apart from the cells' palette


def palette(labels) -> dict[str, str]:
    """Colour of every cell label: the greyscale baseline grey, the others in sorted order from a qualitative
    palette (tab10 without its grey; tab20 beyond 9 cells; evenly spaced hues beyond 19)."""
    import matplotlib.colors as mcolors
    import seaborn as sns

    names = sorted({str(x) for x in labels if not is_untrained(x)})
    base = [c for i, c in enumerate(sns.color_palette("tab10")) if i != 7]  # tab10's 8th colour is grey
    if len(names) > len(base):
        base = [c for i, c in enumerate(sns.color_palette("tab20")) if i not in (14, 15)]
    if len(names) > len(base):
        base = sns.color_palette("husl", len(names))
    out = {n: mcolors.to_hex(base[i]) for i, n in enumerate(names)}
    out[GREY] = GREY_COLOUR
    out[MEAN_COLOUR] = MEAN_COLOUR_COLOUR
    return out


def run_palette(runs: pd.DataFrame) -> dict[str, str]:
    """The palette of a run: every cell label of ``runs.csv`` (``_label``)."""
    return palette(_label(runs)) if not runs.empty else {GREY: GREY_COLOUR}


def _label(df: pd.DataFrame) -> pd.Series:
    """Cell label: ``cell``, or ``model / cell`` when the run has several models."""
    single = df.loc[~untrained_mask(df["cell"]), "model"].nunique() <= 1  # the baselines have model "(none)"
    return df["cell"] if single else df["model"].astype(str) + " / " + df["cell"].astype(str)


def psnr_per_cell(runs: pd.DataFrame, path: Path, colours: dict | None = None) -> bool:
    """PSNR per cell: mean with the same 95 % t-interval over seeds as the leaderboard table, one dot per seed, and
    the greyscale baseline as a dashed line; cells top to bottom in leaderboard order (horizontal, so that long
    names never overlap). Returns False (nothing written) without successful runs.

    Args:
        runs: the run records.
        path: PNG to write.
        colours: ``{label: colour}`` (default: ``run_palette(runs)``).
    """
    if runs.empty or not (runs["status"] == "ok").any():
        return False
    plt, sns = _plt()
    colours = colours or run_palette(runs)
    ok = runs[runs["status"] == "ok"].copy()
    ok["psnr"] = pd.to_numeric(ok["psnr"], errors="coerce")
    grey = ok[ok["cell"] == GREY]
    tint = ok[ok["cell"] == MEAN_COLOUR]
    cells = ok[~untrained_mask(ok["cell"])].copy()
    cells["label"] = _label(cells)
    summary = cells.groupby("label")["psnr"].agg(["mean", ci95]).sort_values("mean", ascending=False)
    order = summary.index.tolist()
    longest = max((len(o) for o in order), default=4)
    fig, ax = plt.subplots(figsize=(6.5 + 0.06 * longest, 1.2 + 0.45 * max(len(order), 2)))
    if len(cells):
        y = list(range(len(order)))
        for k, lab in enumerate(order):
            pts = cells.loc[cells["label"] == lab, "psnr"].to_numpy()
            ax.scatter(pts, [k + 0.22] * len(pts), color=colours.get(lab, "C0"), alpha=0.5, s=18, zorder=2)
            ax.errorbar(summary.loc[lab, "mean"], k, xerr=0 if pd.isna(summary.loc[lab, "ci95"]) else
                        summary.loc[lab, "ci95"], fmt="o", color=colours.get(lab, "C0"), capsize=5, ms=7, zorder=3)
        ax.set_yticks(y, order)
        ax.set_ylim(len(order) - 0.5, -0.6)
        ax.errorbar([], [], xerr=[], fmt="o", color="black", capsize=5, label="mean, 95 % t-CI over seeds")
        ax.scatter([], [], color="black", alpha=0.5, s=18, label="one seed")
    if len(grey):
        g = grey["psnr"].mean()
        ax.axvline(g, ls="--", color=GREY_COLOUR, label=f"greyscale {g:.2f} dB")
    if len(tint):
        t = tint["psnr"].mean()
        ax.axvline(t, ls=":", color=MEAN_COLOUR_COLOUR, label=f"mean colour {t:.2f} dB")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=3, fontsize=8, frameon=False)
    ax.set_xlabel("test PSNR (dB)")
    ax.set_title("Test PSNR per cell", fontsize=11)
    save_figure(fig, path)
    return True


def val_curves(history: pd.DataFrame, path: Path, colours: dict | None = None) -> bool:
    """Validation PSNR over training steps: one small panel per cell (shared axes, cells in name order), each with
    its runs (seeds, folds) as thin lines, their median as a bold line and their range as a light band, so that no
    cell's curve hides another's. Returns False (nothing written) without history.

    Args:
        history: the run's ``history.csv`` rows (``step``, ``val_psnr``, ``model``, ``cell``, ``seed``, ``fold``).
        path: PNG to write.
        colours: ``{label: colour}`` (default: from ``history``).
    """
    if history.empty:
        return False
    plt, _ = _plt()
    h = history.copy()
    for c in ("step", "val_psnr"):
        h[c] = pd.to_numeric(h[c], errors="coerce")
    h = h.dropna(subset=["step", "val_psnr"])
    if h.empty:
        return False
    h["label"] = _label(h)
    h["run"] = h["seed"].astype(str) + "/" + (h["fold"].astype(str) if "fold" in h else "")
    colours = colours or palette(h["label"])
    order = sorted(h["label"].unique())
    ncols = min(len(order), 4)
    nrows = -(-len(order) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.2 + 2.5 * ncols, 0.9 + 1.9 * nrows), sharex=True,
                             sharey=True, squeeze=False)
    for ax, lab in zip(axes.flat, order):
        _curve_panel(ax, h[h["label"] == lab], colours.get(lab, "C0"), lab)
    for k, ax in enumerate(axes.flat):
        if k >= len(order):
            ax.set_visible(False)
        elif k + ncols >= len(order):  # the lowest panel of its column: its step labels
            ax.tick_params(labelbottom=True)
    fig.supxlabel("training step", fontsize=9)
    fig.supylabel("validation PSNR (dB)", fontsize=9)
    fig.suptitle("Validation PSNR during training (median over seeds and folds; band: their range; thin: each run)",
                 fontsize=10)
    save_figure(fig, path)
    return True


def _curve_panel(ax, g: pd.DataFrame, colour: str, title: str) -> None:
    """One cell's panel of :func:`val_curves`: every run thin, the median bold, the range as a light band."""
    for _, run in g.groupby("run", sort=True):
        run = run.sort_values("step")
        ax.plot(run["step"], run["val_psnr"], color=colour, lw=0.7, alpha=0.35)
    per_step = g.groupby("step")["val_psnr"].agg(["median", "min", "max"]).sort_index()
    ax.fill_between(per_step.index, per_step["min"], per_step["max"], color=colour, alpha=0.15, lw=0)
    ax.plot(per_step.index, per_step["median"], color=colour, lw=2, marker="o" if len(per_step) < 12 else None,
            ms=3)
    ax.set_title(title, fontsize=8, color=colour)
    ax.tick_params(labelsize=7)


def psnr_vs_colourfulness(runs: pd.DataFrame, path: Path, truth_colourfulness: float | None = None,
                          colours: dict | None = None) -> bool:
    """Test PSNR against colourfulness: one small dot per seed, a large marker per cell mean; cells are named in
    a legend outside the axes (labels on the points would overlap).

    Regression losses tend to predict desaturated, "average" colours: high PSNR, low colourfulness; classification
    losses with rebalancing give vivid colours at a PSNR cost. ``truth_colourfulness`` (mean over the test images)
    is drawn as a vertical line when known. ``colours``: ``{label: colour}`` (default: ``run_palette(runs)``).
    """
    ok = runs[runs["status"] == "ok"].copy()
    if ok.empty:
        return False
    plt, sns = _plt()
    colours = colours or run_palette(runs)
    ok["label"] = _label(ok)
    for c in ("psnr", "colourfulness"):
        ok[c] = pd.to_numeric(ok[c], errors="coerce")
    means = ok.groupby("label", sort=False)[["psnr", "colourfulness"]].mean().reset_index()
    means = means.sort_values("psnr", ascending=False)
    fig, ax = plt.subplots(figsize=(8.5, 4.5))
    for _, r in means.iterrows():
        pts = ok[ok["label"] == r["label"]]
        col = colours.get(r["label"], "C0")
        ax.scatter(pts["colourfulness"], pts["psnr"], color=col, alpha=0.4, s=22)
        ax.scatter(r["colourfulness"], r["psnr"], color=col, s=130, marker="D", edgecolor="black", zorder=3,
                   label=r["label"])
    if truth_colourfulness is not None:
        ax.axvline(truth_colourfulness, ls="--", color=GREY_COLOUR, label=f"ground truth ({truth_colourfulness:.1f})")
    ax.set_xlabel("colourfulness (Hasler & Süsstrunk)")
    ax.set_ylabel("test PSNR (dB)")
    ax.set_title("Accuracy vs. vivid colour (dots: seeds, diamonds: cell means)", fontsize=11)
    ax.legend(title="", fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
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
    ok = runs[(runs["status"] == "ok") & ~untrained_mask(runs["cell"])].copy()
    if ok.empty or "train_img_per_s" not in ok:
        return False
    plt, sns = _plt()
    ok["train_img_per_s"] = pd.to_numeric(ok["train_img_per_s"], errors="coerce")
    panels = 2 if bench_rows is not None and not bench_rows.empty else 1
    fig, axes = plt.subplots(1, panels, figsize=(4 + 3.6 * panels, 3.8), squeeze=False)
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
        axes[0][1].legend(title="", fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
        r = b.iloc[-1]
        when = str(r.get("timestamp", ""))[:10]
        axes[0][1].set_title(f"bench.throughput, synthetic data, batch {r.get('batch', '?')}, {r.get('size', '?')} px, "
                             f"{r.get('precision', '?')}\n{r.get('device_name', '')}, {when}", fontsize=9)
    save_figure(fig, path)
    return True
