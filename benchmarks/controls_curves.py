"""Learning curves of a controls-grid run folder against the Bayes rows: the figure of results/controls-cpu.md.

    python benchmarks/controls_curves.py RUN_FOLDER results/controls-cpu.png

Validation PSNR over steps (mean over seeds, every seed thin) for every trained cell, one panel per cell, with the
cell's own Bayes-optimal PSNR as a dashed line (every control image has the same share of each colour, so a row's
PSNR on the validation images equals its PSNR on the test images). Prints the curves as a Markdown table.
"""
from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from bench.core.records import is_untrained, read_rows  # noqa: E402
from bench.metrics.knownanswers import bayes_row_of  # noqa: E402


def main(run_dir: str, out_png: str) -> None:
    run = Path(run_dir)
    hist = pd.DataFrame(read_rows(run / "history.csv"))
    runs = pd.DataFrame(read_rows(run / "runs.csv"))
    hist = hist[hist["val_psnr"].astype(str) != ""].astype({"step": int, "val_psnr": float, "seed": int})
    bayes = {r["cell"]: float(r["psnr"]) for _, r in runs.iterrows() if str(r["cell"]).startswith("bayes:")}
    cells = [c for c in dict.fromkeys(runs["cell"]) if not is_untrained(c)]
    fig, axes = plt.subplots(1, len(cells), figsize=(3.0 * len(cells), 3.0), sharey=True)
    table = {}
    for ax, cell in zip(axes, cells):
        h = hist[hist["cell"] == cell]
        for _, g in h.groupby("seed"):
            ax.plot(g["step"], g["val_psnr"], lw=0.8, alpha=0.5, color="tab:blue")
        mean = h.groupby("step")["val_psnr"].mean()
        table[cell] = mean
        ax.plot(mean.index, mean.values, lw=2, color="tab:blue")
        r = runs[runs["cell"] == cell].iloc[0]
        row = bayes_row_of(r["loss"], r.get("loss_params", "{}"))
        if row in bayes:
            ax.axhline(bayes[row], ls="--", color="black", lw=1, label=f"{row} {bayes[row]:.2f}")
            ax.legend(loc="lower right", fontsize=7)
        ax.set_title(cell, fontsize=9)
        ax.set_xlabel("step")
    axes[0].set_ylabel("validation PSNR (dB)")
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    df = pd.DataFrame(table)
    print(df.round(2).to_markdown())


if __name__ == "__main__":
    main(*sys.argv[1:3])
