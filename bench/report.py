"""The report of a run folder: leaderboard with paired statistics, plots, sample colorizations, configuration,
environment and how to reproduce it.

    colorbench report results/losses-quick-imagenet-sample
    colorbench report RUN_DIR --throughput results/throughput-nvidia-h100-80gb-hbm3.csv

Writes into the run folder ``report.html`` (one self-contained file: figures and the sample gallery embedded as
data: URIs, a few lines of inline script for sorting tables and switching the gallery's cell; it links to the
run's weights and configurations in ``models/``), ``report.md`` (plain Markdown, figures linked from ``figures/``),
``figures/*.png`` and refreshes ``leaderboard.md``/``.csv``. Everything about the run (cells, configuration, the
``--config`` file, commands) is read from the run folder's own records, never from the installed code. Both files
are written from one document (:func:`document` builds it of ``bench.reporting.document``'s blocks; that module's two
renderers write it and do all the escaping).
"""
from __future__ import annotations

import errno
import json
import math
import shlex
import sys
import urllib.parse
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from bench import cli
from bench.core.paths import results_root
from bench.core.records import (
    CONFIG_COPY, atomic_write_text, CorruptRecordError, device_slug, is_untrained, read_json, read_rows, redact,
    untrained_mask, write_error_message)
from bench.metrics.table import METRICS, N_BOOT, metric as get_metric
from bench.reporting.document import (
    Code, Contents, Details, Document, Gallery, GalleryCard, Heading, Image, Link, List, Paragraph, Table, to_html,
    to_markdown)

# pandas and the modules that use it (the leaderboard, statistics, plots, samples) are imported where they are
# used, after the command line is parsed: --help stays fast
if TYPE_CHECKING:
    import pandas as pd

ENV_KEYS = ("colorbench", "git_commit", "plugins", "device", "device_name", "cpu", "torch_threads", "torch", "torchvision", "torchmetrics", "numpy", "pandas", "pillow", "optuna",
            "python", "platform", "hostname")

class ReportError(ValueError):
    """The folder is not a run folder (no ``runs.csv``) or cannot be read."""


# ----------------------------------------------------------------------------------------------------- data


def load(run_dir: Path) -> dict:
    """Everything the report needs from a run folder."""
    import pandas as pd

    from bench.reporting import leaderboard

    run_dir = Path(run_dir)
    if not (run_dir / "runs.csv").is_file():
        raise ReportError(f"{run_dir} is not a run folder: it has no runs.csv")
    runs = leaderboard.load_runs(run_dir)
    if runs.empty:
        raise ReportError(f"{run_dir}/runs.csv has no runs yet")
    history = pd.DataFrame(read_rows(run_dir / "history.csv"))
    meta = read_json(run_dir / "run.json") if (run_dir / "run.json").is_file() else {}
    per_image = leaderboard.load_per_image(run_dir)
    # without per-image results the paired statistics cannot be computed: the report says so instead of concluding
    missing = None
    if per_image.empty:
        missing = (f"{run_dir / 'per_image.csv'} is " + ("missing" if not (run_dir / "per_image.csv").is_file()
                                                          else "empty"))
    raw = pd.DataFrame(read_rows(run_dir / "runs.csv"))  # one row per training (per fold): what the counts say
    return {"runs": runs, "raw_runs": raw, "per_image": per_image, "history": history, "meta": meta,
            "per_image_missing": missing}


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def run_counts(raw: pd.DataFrame, merged: pd.DataFrame, missing: int = 0) -> str:
    """The sentence that counts the runs: with k-fold rotation, how many trainings ``runs.csv`` holds (cells ×
    seeds × folds, plus the baseline rows) and into how many rows (one per model, cell and seed) the folds were
    merged, then how many of those succeeded and failed.

    Args:
        raw: the rows of ``runs.csv`` as written (one per fold).
        merged: the same rows with the folds combined (``leaderboard.load_runs``), as the leaderboard counts them.
        missing: planned (model, cell, seed, fold) runs with no row.
    """
    import pandas as pd

    from bench.data import folds

    ok, failed = int((merged["status"] == "ok").sum()), int((merged["status"] != "ok").sum())
    miss = f", {missing} missing" if missing else ""
    if raw.empty or not folds.has_folds(raw):
        return (f"{ok} successful run(s) (the grey and mean-colour baseline rows included), {failed} failed"
                f"{miss}.")
    trained = raw[~untrained_mask(raw["cell"])]
    n_cells = len(trained[["model", "cell"]].drop_duplicates())
    n_seeds = trained["seed"].astype(str).nunique()
    declared = pd.to_numeric(raw["folds"], errors="coerce").max() if "folds" in raw else math.nan
    k = int(declared) if declared == declared else raw.loc[raw["fold"].astype(str).str.strip() != "", "fold"].nunique()
    grid = f"{_plural(n_cells, 'cell')} × {_plural(n_seeds, 'seed')} × {k} folds"
    what = f"{len(trained)} trainings ({grid})" if len(trained) == n_cells * n_seeds * k else \
        f"{len(trained)} trainings (of {grid})"
    base = len(raw) - len(trained)
    what += f" and {_plural(base, 'baseline row')}" if base else ""
    return (f"{len(raw)} runs: {what}, merged over folds into {len(merged)} rows (one per model, cell and seed, "
            f"baselines included): {ok} successful, {failed} failed{miss}.")


def truth_colourfulness(meta: dict) -> float | None:
    """Mean colourfulness of the ground-truth test images (preprocessed like the evaluation), if they are on disk."""
    files = [Path(p) for p in meta.get("splits", {}).get("test", [])]
    cfg = meta.get("base_config", {})
    if not files or not all(f.is_file() for f in files) or "size" not in cfg:
        return None
    try:
        from bench.data.sources import ImageStore
        from bench.metrics.compute import colourfulness

        imgs = ImageStore(files, int(cfg["size"])).centre_crops(int(cfg.get("eval_size", cfg["size"])))
        return float(colourfulness(imgs.float() / 255.0).mean())
    except Exception:  # a figure annotation is not worth failing the report for
        return None


def per_image_table(per_image: pd.DataFrame, order: list[tuple[str, str]]) -> pd.DataFrame:
    """Test PSNR per image (rows) and cell (columns, leaderboard order), averaged over seeds."""
    import pandas as pd

    if per_image.empty:
        return pd.DataFrame()
    piv = per_image.pivot_table(index="image", columns=["model", "cell"], values="psnr", aggfunc="mean")
    cols = [c for c in order if c in piv.columns]
    multi = len({m for m, c in cols if not is_untrained(c)}) > 1
    piv = piv[cols]
    piv.columns = [f"{m} / {c}" if multi and not is_untrained(c) else c for m, c in cols]
    return piv.reset_index()


def env_table(runs: pd.DataFrame, meta: dict) -> pd.DataFrame:
    """The environment of the runs: each key with its distinct values (several after a resume on another host)."""
    import pandas as pd

    rows = []
    env = meta.get("environment", {})
    for k in ENV_KEYS:
        vals = [str(v) for v in runs[k].dropna().unique() if str(v)] if k in runs else []
        if not vals and k in env:
            vals = [str(env[k])]
        if vals:
            rows.append({"key": k, "value": "; ".join(vals)})
    return pd.DataFrame(rows)


def config_tables(meta: dict, runs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(base configuration as key/value, the grid's cells with what each changes), from the run's own records:
    ``run.json`` (``cells``, as the run defined them, from a named grid or a ``--config`` file); for a run.json
    without them, the cells seen in ``runs.csv`` with their loss."""
    import pandas as pd

    base = pd.DataFrame([{"key": k, "value": str(v)} for k, v in meta.get("base_config", {}).items()])
    losses = {}
    if "loss" in runs:
        losses = {str(r["cell"]): str(r["loss"]) for _, r in runs[~untrained_mask(runs["cell"])].iterrows()}
    recorded = meta.get("cells")
    if isinstance(recorded, dict) and recorded:
        cells = [{"cell": name, "changes": json.dumps(changes), "loss (as trained)": losses.get(name, "")}
                 for name, changes in recorded.items()]
    else:
        cells = [{"cell": c, "changes": "(not recorded in run.json)", "loss (as trained)": loss}
                 for c, loss in losses.items()]
    return base, pd.DataFrame(cells)


def expected_keys(meta: dict) -> list[tuple[str, str, str, str]]:
    """Every (model, cell, seed, fold) the run's plan holds: ``run.json``'s ``jobs`` (else its cells × seeds ×
    folds × models, for older records); empty when the plan is not recorded."""
    if isinstance(meta.get("jobs"), list):
        out = []
        for key in meta["jobs"]:  # model/cell/seed[/fold<f>] (bench.grid.plan.key_str); a cell name may hold "/"
            parts = str(key).split("/")
            fold = parts.pop()[4:] if len(parts) > 3 and parts[-1].startswith("fold") else ""
            if len(parts) >= 3:
                out.append((parts[0], "/".join(parts[1:-1]), parts[-1], fold))
        return out
    cells, seeds = meta.get("cells"), meta.get("seeds")
    if not isinstance(cells, dict) or not isinstance(seeds, int):
        return []
    models_ = meta.get("models") or [meta.get("base_config", {}).get("model", "")]
    folds = int(meta.get("folds") or 1)
    return [(m, c, str(s), str(f) if folds > 1 else "") for m in models_ for c in cells for s in range(seeds)
            for f in range(folds)]


def missing_runs(meta: dict, run_dir: Path) -> pd.DataFrame:
    """The runs of the plan that ``runs.csv`` does not hold (neither finished nor failed): an unfinished grid."""
    import pandas as pd

    runs = pd.DataFrame(read_rows(Path(run_dir) / "runs.csv"))  # one row per fold (load_runs combines them)

    def norm(v) -> str:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return ""
        return str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)

    have = {(str(r["model"]), str(r["cell"]), norm(r["seed"]), norm(r.get("fold", "")))
            for _, r in runs.iterrows()} if not runs.empty else set()
    rows = [dict(zip(("model", "cell", "seed", "fold"), k)) for k in expected_keys(meta) if k not in have]
    return pd.DataFrame(rows, columns=["model", "cell", "seed", "fold"])


def data_summary(runs: pd.DataFrame, meta: dict) -> str:
    r = runs.iloc[0]
    parts = []
    for k, label in (("data_train", "train"), ("data_test", "test")):
        if k in runs:
            parts.append(f"{label}: {r[k]}")
    counts = ", ".join(f"{r[k]} {k[2:]}" for k in ("n_train", "n_val", "n_test") if k in runs)
    s = "; ".join(parts) + (f" ({counts} images)" if counts else "")
    if meta.get("skipped"):
        s += f"; {len(meta['skipped'])} unreadable files skipped"
    return s


def commands(meta: dict, run_dir: Path) -> list[str]:
    """Every command that wrote into the run folder, in order: ``commands.txt`` (``bench.ablate`` and
    ``bench.evaluate`` add theirs), else ``run.json``'s command."""
    from bench.core.records import COMMANDS_FILE

    path = Path(run_dir) / COMMANDS_FILE
    found = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()] \
        if path.is_file() else []
    if meta.get("command") and meta["command"] not in found:
        found.insert(0, meta["command"])
    return [redact(c) for c in found] or ["colorbench ablate ..."]  # run.json of older versions held passwords


def reproduce(meta: dict, runs: pd.DataFrame, run_dir: Path) -> str:
    env = meta.get("environment", {})
    commit = env.get("git_commit") or (runs["git_commit"].iloc[0] if "git_commit" in runs else "")
    version = env.get("colorbench") or (str(runs["colorbench"].dropna().iloc[0]) if "colorbench" in runs
                                        and runs["colorbench"].notna().any() else "")
    lines = [f"# made by colorbench {version or '(version not recorded)'}"
             + (f", git commit {commit}" if commit and commit != "unknown" else "")]
    if commit and commit != "unknown":
        lines.append(f"git checkout {commit.split('+')[0]}" + ("   # the run had uncommitted changes" if "+dirty" in commit else ""))
    which = "" if commit and commit != "unknown" or not version else f" of colorbench {version}"
    lines.append(f"pip install -e .   # in the checkout{which} (without a GPU: see the README's Quick start)")
    lines += commands(meta, run_dir) + [f"colorbench report {shlex.quote(str(run_dir))}"]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------- figures


def make_figures(data: dict, board: pd.DataFrame, fig_dir: Path, throughput_rows: pd.DataFrame | None) -> dict:
    """Write every figure that the data allows; returns {name: (path, caption)} in display order. Every figure
    uses one palette keyed by cell label (``plots.run_palette``): a cell has the same colour everywhere."""
    from bench.reporting import plots
    from bench.reporting import samples

    fig_dir.mkdir(parents=True, exist_ok=True)
    runs, history, per_image = data["runs"], data["history"], data["per_image"]
    colours = plots.run_palette(runs)
    out = {}
    if plots.psnr_per_cell(runs, fig_dir / "psnr.png", colours):
        out["psnr"] = (fig_dir / "psnr.png", "Test PSNR per cell: mean and 95 % t-interval over seeds; small dots "
                       "are the seeds; dashed line: the greyscale baseline.")
    if plots.val_curves(history, fig_dir / "val_psnr.png", colours):
        out["val_psnr"] = (fig_dir / "val_psnr.png", "Validation PSNR over training steps, one panel per cell "
                             "(shared axes): the median over seeds and folds, their range as a band, each run thin.")
    if plots.psnr_vs_colourfulness(runs, fig_dir / "psnr_colourfulness.png", truth_colourfulness(data["meta"]),
                                   colours):
        out["psnr_colourfulness"] = (fig_dir / "psnr_colourfulness.png",
                                     "Accuracy against vivid colour: higher PSNR usually means duller colours.")
    if plots.throughput(runs, fig_dir / "throughput.png", throughput_rows):
        out["throughput"] = (fig_dir / "throughput.png", "Training throughput per model (images/s).")
    order = [(m, c) for m, c in zip(board["model"], board["cell"]) if not is_untrained(c)] if not board.empty else []
    scores = {}
    if not per_image.empty:
        for _, r in per_image.iterrows():
            scores[(str(r["model"]), str(r["cell"]), int(r["seed"]), samples.sample_name(r["image"]))] = float(r["psnr"])
    if samples.plot_grid(data["run_dir"], fig_dir / "samples.png", order, scores, colours):
        out["samples"] = (fig_dir / "samples.png", "Fixed test images: greyscale input, each cell's colorization "
                          "(lowest seed, PSNR under it) and the ground truth.")
    return out


# ----------------------------------------------------------------------------------------------------- document


def set_verdicts(tables: dict[str, pd.DataFrame], m) -> list[tuple[str, dict, list[str]]]:
    """(test set, ``leaderboard.verdict`` dict, verdict sentences) for the run's own test set and every set that
    ``bench.evaluate`` scored (``tables``: ``testsets.boards``)."""
    from bench.reporting import leaderboard

    out = []
    for name, b in tables.items():
        out.append((name, leaderboard.verdict(b, m) if not b.empty else {}, leaderboard.verdict_lines(b, m)))
    return out


def disagreement(verdicts: list[tuple[str, dict, list[str]]]) -> str | None:
    """One sentence when the test sets' verdicts differ (which cells beat grey, which cell ranks first)."""
    found = [(name, v) for name, v, _ in verdicts if v]
    if len(found) < 2:
        return None
    better = {name: tuple(sorted(v.get("better_than_grey", []))) for name, v in found}
    tint = {name: tuple(sorted(v.get("better_than_mean_colour", []))) for name, v in found}
    top = {name: v["best"][1] if v.get("best") else "—" for name, v in found}
    if len(set(better.values())) == 1 and len(set(tint.values())) == 1 and len(set(top.values())) == 1:
        return None
    said = "; ".join(f"on {name}: " + (", ".join(better[name]) or "none") + " better than grey, "
                     + (", ".join(tint[name]) or "none") + f" better than the mean colour (top-ranked: {top[name]})"
                     for name, _ in found)
    return (f"The test sets disagree. Significantly {said}. A conclusion about the losses should hold on every "
            f"set; these cells' advantage depends on the test images.")


def models_table(run_dir: Path) -> pd.DataFrame:
    """Every saved network of the run with relative links to its weights and configuration (``models/``)."""
    import pandas as pd

    from bench.training.checkpoint import saved_models

    rows = []
    for s in saved_models(run_dir):
        rel = s.folder.relative_to(run_dir).as_posix()
        rows.append({"model": s.model, "cell": s.cell, "seed": s.seed, "fold": "" if s.fold is None else s.fold,
                     "folder": rel})
    return pd.DataFrame(rows)


def _models_block(saved: pd.DataFrame) -> Table:
    """The saved networks as a table whose last two columns link to each run's weights and configuration.

    Args:
        saved: :func:`models_table`.
    """
    from bench.training.checkpoint import CONFIG, WEIGHTS

    links = saved.copy()
    quoted = [urllib.parse.quote(str(f)) for f in saved["folder"]]
    links["weights"] = [Link(WEIGHTS, f"{q}/{WEIGHTS}") for q in quoted]
    links["configuration"] = [Link(CONFIG, f"{q}/{CONFIG}") for q in quoted]
    return Table.from_frame(links, sortable=True)


def gallery(run_dir: Path, order: list[tuple[str, str]], scores: dict) -> Gallery | None:
    """Every sample image of the run (all test images when training saved them all): greyscale input, one cell's
    colorization (a switch picks the cell; its lowest seed), ground truth.

    Args:
        run_dir: the run folder (``samples/``).
        order: (model, cell) in leaderboard order: the switch's order.
        scores: (model, cell, seed, image name) → the ranking metric's value, shown with each colorization.

    Returns:
        The gallery block, or None when the run saved no samples.
    """
    from bench.reporting import samples

    found = samples.find_samples(run_dir)
    images, folders = found["images"], found["cells"]
    if not images or not folders:
        return None
    cols = samples.grid_columns(folders, order)
    root = Path(run_dir) / "samples"
    cards = []
    for stem in images:
        shots = []
        for i, (label, key, folder) in enumerate(cols):
            f = folder / f"{stem}.png"
            if f.is_file():
                v = scores.get((*key, stem))
                shots.append((i, f, f"{label}" + (f": {v:.2f}" if v is not None else "")))
        if shots:
            grey, truth = root / "grey" / f"{stem}.png", root / "truth" / f"{stem}.png"
            cards.append(GalleryCard(stem, grey if grey.is_file() else None, truth if truth.is_file() else None,
                                     shots))
    if not cards:
        return None
    return Gallery([f"{label} (seed {key[2]})" for label, key, _ in cols], cards, "samples/")


#: the figures in display order: (make_figures' name, the section's heading)
FIGURES = (("psnr", "PSNR per cell"), ("val_psnr", "Validation PSNR over training"),
           ("psnr_colourfulness", "PSNR against colourfulness"), ("throughput", "Throughput per model"),
           ("samples", "Sample colorizations"))


def _summary(data: dict, board: pd.DataFrame, m, env: pd.DataFrame, missing: pd.DataFrame,
             unfinished: str | None) -> list[str]:
    """The list under the title: version, the top-ranked cell, grid, data, counts of runs.

    Args:
        data: as :func:`document`.
        board: the leaderboard.
        m: the ranking metric (``bench.metrics.stats.Metric``).
        env: :func:`env_table`.
        missing: :func:`missing_runs`.
        unfinished: the unfinished grid's warning (None: the grid is complete).
    """
    import pandas as pd

    from bench.reporting import leaderboard

    runs, meta = data["runs"], data["meta"]
    version = next((r["value"] for _, r in env.iterrows() if r["key"] == "colorbench"), "(not recorded)")
    commit = next((r["value"] for _, r in env.iterrows() if r["key"] == "git_commit"), "")
    summary = [f"Made by colorbench {version}" + (f", git commit {commit}" if commit else "") + "."]
    if unfinished:
        summary.append(unfinished)
    best = leaderboard.best_cell(board) if not board.empty else None
    if best is not None:
        row = board[(board["model"] == best[0]) & (board["cell"] == best[1])].iloc[0]
        unit = f" {m.unit}" if m.unit else ""
        ci = "" if pd.isna(row["score_ci95"]) else f" ± {m.fmt(row['score_ci95'])}"
        summary.append(("Top-ranked so far (unfinished grid)" if unfinished else "Top-ranked cell")
                       + f": **{best[1]}** ({best[0]}), {m.fmt(row['score'])}{ci}{unit} test "
                       f"{m.label or m.name} over {int(row['n'])} seed(s)"
                       + (f", {m.fmt(row['delta_grey'], True)}{unit} vs. greyscale" if "delta_grey" in row
                          and not pd.isna(row["delta_grey"]) else "")
                       + (f", {m.fmt(row['delta_mean_colour'], True)}{unit} vs. the mean colour"
                          if "delta_mean_colour" in row and not pd.isna(row["delta_mean_colour"]) else "") + ".")
    summary.append(f"Grid *{meta.get('grid', runs['grid'].iloc[0] if 'grid' in runs else '?')}*, preset "
                   f"*{meta.get('preset', '?')}*, {meta.get('seeds', runs['seed'].nunique())} seed(s); data: "
                   f"{data_summary(runs, meta)}.")
    summary.append(run_counts(data.get("raw_runs", runs), runs, len(missing)))
    return summary


def _verdict_blocks(run_dir: Path, data: dict, board: pd.DataFrame, m, unfinished: str | None) -> list:
    """The verdict of each test set, after the unfinished grid's warning and the sentence on the sets' disagreement.

    Args:
        run_dir, data: as :func:`document`.
        board: the leaderboard.
        m: the ranking metric (``bench.metrics.stats.Metric``).
        unfinished: the unfinished grid's warning (None: the grid is complete).
    """
    verdicts = set_verdicts(data["set_boards"], m) if not board.empty else []
    if data.get("per_image_missing"):  # say why there is no verdict instead of concluding without its input
        verdicts = [(verdicts[0][0] if verdicts else "own test set", {},
                     [(f"Paired statistics are unavailable: {data['per_image_missing']}, so no cell is called "
                       f"better than, worse than or tied with another.")])]
    blocks = [Paragraph(unfinished, "warn")] if unfinished else []
    disagree = disagreement(verdicts)
    if disagree:
        blocks.append(Paragraph(f"**{disagree}**", "warn"))
    for i, (name, _, lines) in enumerate(verdicts):
        if lines:
            head = f"Test set {name}" + (" (the run's own)" if i == 0 else " (re-scored by colorbench evaluate)")
            blocks += [Heading(3, head), List(lines, "verdict")]
    return blocks


def _leaderboard_blocks(data: dict, board: pd.DataFrame, m) -> list:
    """The ranking table of each group (automatic, reference-based), the note on the statistics, the details.

    Args:
        data: as :func:`document`.
        board: the leaderboard.
        m: the ranking metric (``bench.metrics.stats.Metric``).
    """
    from bench.reporting import leaderboard

    groups = [(leaderboard.AUTOMATIC, f"Ranking by {m.title}", None)]
    if not board.empty and (board["group"] == leaderboard.REFERENCE).any():
        groups.append((leaderboard.REFERENCE, "Reference-based colorizers",
                       "These models get a colour photo as input. They are ranked on the score with *another* test "
                       "photo as reference; with the test photo itself as reference (its own colours) the score is "
                       "an upper bound, not comparable with the automatic colorizers."))
    if board.empty:
        return [Paragraph("(no successful runs)")]
    blocks = []
    for group, heading, text in groups:
        blocks += [Heading(3, heading)] + ([Paragraph(text, "note")] if text else []) + \
            [Table.from_frame(leaderboard.ranking_table(board, group, m), sortable=True, style="board")]
    if "p_grey" in board or "p_best" in board:
        blocks.append(Paragraph(leaderboard.stats_note(m, data.get("n_boot", N_BOOT)), "note"))
    answers = board.attrs.get("known_answers", {})
    if answers:  # control data: each cell against its loss's Bayes row, and the known orderings
        from bench.metrics.knownanswers import NOTE, tables

        blocks += [Heading(3, "Known answers (control data)"), Paragraph(NOTE, "note")]
        blocks += [Table.from_frame(t, sortable=True, style="board") for t in tables(answers)]
    details = leaderboard.details_table(board)
    if not details.empty:
        blocks += [Heading(3, "Details"), Table.from_frame(details, sortable=True, style="board")]
    return blocks


def _configuration_blocks(run_dir: Path, meta: dict, runs: pd.DataFrame) -> list:
    """The base configuration, the grid's cells, the ``--config`` file, the image files of each split, run.json.

    Args:
        run_dir: the run folder.
        meta: its ``run.json``.
        runs: its runs (:func:`load`).
    """
    base, cells = config_tables(meta, runs)
    config_file = _config_file(run_dir, meta)
    cells_note = ("Cells of the grid, as the run recorded them in run.json"
                  + (f" (defined in the configuration file `{meta['config_file']['path']}`, copied below)"
                     if config_file else "") + ":")
    blocks = [Paragraph("Base configuration (every cell starts from it):"), Table.from_frame(base),
              Paragraph(cells_note), Table.from_frame(cells)]
    if config_file:
        blocks += [Paragraph(f"The configuration file (`{CONFIG_COPY}` in the run folder):"), Code(config_file, "yaml")]
    splits = meta.get("splits")
    if splits:
        listed = []
        for k, files in splits.items():
            listed += [Paragraph(f"**{k}** ({len(files)})"), Code("\n".join(files))]
        counts = ", ".join(f"{k} {len(files)}" for k, files in splits.items())
        blocks.append(Details("Image files of each split", listed,
                              f"Image files of each split: {counts}; report.html lists them, as does `run.json` "
                              f"(`splits`)."))
    if meta:
        blocks.append(Details("run.json", [Code(redact(json.dumps(meta, indent=2)))],
                              "run.json: in the run folder; report.html shows it."))
    return blocks


def document(run_dir: Path, data: dict, board: pd.DataFrame, failed: pd.DataFrame, figures: dict) -> Document:
    """The report as one document (``bench.reporting.document``), which both report.md and report.html are written from.

    Args:
        run_dir: the run folder.
        data: :func:`load`'s dict with ``run_dir``, ``n_boot``, ``metric``, ``test_sets`` (``testsets.sections``)
            and ``throughput`` (:func:`load_throughput`) added.
        board, failed: ``leaderboard.build``'s ranking and failed runs.
        figures: :func:`make_figures`' {name: (path, caption)}.
    """
    runs, meta = data["runs"], data["meta"]
    title = f"Colorization benchmark: {run_dir.name}"
    when = datetime.now(timezone.utc).isoformat(timespec="seconds")
    m = get_metric(data.get("metric", "psnr"))
    env = env_table(runs, meta)
    missing = missing_runs(meta, run_dir)
    unfinished = _unfinished_note(meta, missing)
    # sections: (anchor, heading, blocks); the table of contents lists them in this order
    sections = [*_result_sections(run_dir, data, board, failed, m, missing, unfinished), *_test_set_sections(data),
                *_figure_sections(run_dir, figures), *_gallery_sections(run_dir, data, board, m),
                *_model_sections(run_dir), *_throughput_sections(data), *_per_image_sections(data, board),
                ("configuration", "Configuration", _configuration_blocks(run_dir, meta, runs)),
                ("environment", "Environment", [Table.from_frame(env)]),
                ("reproduce", "How to reproduce", [Paragraph("Every command that made this folder, in order:"),
                                                   Code(reproduce(meta, runs, run_dir), "bash")])]
    blocks = [Heading(1, title), Paragraph(f"*Generated {when} by `colorbench report`.*", "note"),
              List(_summary(data, board, m, env, missing, unfinished)), Contents()]
    for anchor, heading, parts in sections:
        blocks += [Heading(2, heading, anchor), *parts]
    return Document(title, blocks)


def _unfinished_note(meta: dict, missing: pd.DataFrame) -> str | None:
    """The warning of a grid with planned runs missing from runs.csv, or None."""
    if missing.empty:
        return None
    cells_missing = ", ".join(dict.fromkeys(missing["cell"]))
    return (f"**Unfinished grid**: {len(missing)} of {len(expected_keys(meta))} planned runs are missing "
            f"(cells: {cells_missing}; listed under *Missing runs*). The ranking and verdict below cover "
            f"the finished runs only and name no winner; run the same command again to finish the grid.")


def _result_sections(run_dir: Path, data: dict, board: pd.DataFrame, failed: pd.DataFrame, m, missing: pd.DataFrame,
                     unfinished: str | None) -> list[tuple]:
    """The verdict, the leaderboard, and the missing and failed runs."""
    sections = []
    verdict = _verdict_blocks(run_dir, data, board, m, unfinished)
    if verdict:
        sections.append(("verdict", "Verdict" + (" (provisional: unfinished grid)" if unfinished else ""), verdict))
    sections.append(("leaderboard", "Leaderboard", _leaderboard_blocks(data, board, m)))
    if not missing.empty:
        sections.append(("missing", "Missing runs", [
            Paragraph("Planned in run.json but not in runs.csv (not finished, not failed):"),
            Table.from_frame(missing, sortable=True)]))
    failed_cols = [c for c in ("model", "cell", "seed", "fold", "status", "failed_step", "error") if c in failed]
    if failed_cols and not failed.empty:
        sections.append(("failed", "Failed runs", [Table.from_frame(failed[failed_cols], sortable=True)]))
    return sections


def _test_set_sections(data: dict) -> list[tuple]:
    """One leaderboard per other test set scored by ``bench.evaluate``."""
    from bench.reporting import testsets

    if not data.get("test_sets"):
        return []
    blocks = [Paragraph(testsets.INTRO, "note")]
    for heading, text, table in data["test_sets"]:
        blocks += [Heading(3, heading)] + ([Paragraph(text, "note")] if text else []) + \
            [Table.from_frame(table, sortable=True, style="board")]
    return [("test-sets", "Other test sets", blocks)]


def _figure_sections(run_dir: Path, figures: dict) -> list[tuple]:
    """A section per figure that was drawn."""
    out = []
    for key, heading in FIGURES:
        if key in figures:
            path, cap = figures[key]
            out.append((f"fig-{key}", heading, [Image(path, path.relative_to(run_dir).as_posix(), heading, cap)]))
    return out


def _gallery_sections(run_dir: Path, data: dict, board: pd.DataFrame, m) -> list[tuple]:
    """Every saved sample colorization, in the leaderboard's order, with its score."""
    import pandas as pd

    from bench.reporting import samples

    order = [(m_, c) for m_, c in zip(board["model"], board["cell"]) if not is_untrained(c)] if not board.empty else []
    scores = {}
    if not data["per_image"].empty:
        for _, r in data["per_image"].iterrows():
            scores[(str(r["model"]), str(r["cell"]), int(r["seed"]), samples.sample_name(r["image"]))] = \
                float(r[m.name]) if m.name in r and pd.notna(r[m.name]) else None
    shown = gallery(run_dir, order, scores)
    if shown is None:
        return []
    return [("gallery", "Sample gallery", [
        Paragraph("Every test image the run saved: greyscale input, the chosen cell's colorization (its lowest "
                  "seed) and the ground truth.", "note"), shown])]


def _model_sections(run_dir: Path) -> list[tuple]:
    """The saved weights and configurations, linked."""
    saved = models_table(run_dir)
    if saved.empty:
        return []
    return [("models", "Trained models", [
        Paragraph("Weights (`model.safetensors`) and configuration (`config.json`) of each run, linked into the "
                  "run folder (the links work beside the report):", "note"), _models_block(saved)])]


def _throughput_sections(data: dict) -> list[tuple]:
    """The throughput measurements found beside the run (``bench.throughput``)."""
    tp = throughput_table(data.get("throughput"))
    if tp.empty:
        return []
    runs = data["runs"]
    run_commit = str(runs["git_commit"].iloc[0])[:10] if "git_commit" in runs else "?"
    run_dev = str(runs["device_name"].iloc[0]) if "device_name" in runs else "?"
    return [("throughput", "Throughput measurements (bench.throughput)", [
        Paragraph(f"Measured by `bench.throughput` on synthetic data, not during this run; each row names its "
                  f"device, host, date and commit. This run: {run_dev}, commit {run_commit}.", "note"),
        Table.from_frame(tp, sortable=True)])]


def _per_image_sections(data: dict, board: pd.DataFrame) -> list[tuple]:
    """The per-image test PSNR of every cell (folded away)."""
    import pandas as pd

    pi_table = per_image_table(data["per_image"], [(m_, c) for m_, c in zip(board["model"], board["cell"])]
                               if not board.empty else [])
    if pi_table.empty:
        return []
    for c in pi_table.columns[1:]:  # dB with two decimals in both formats
        pi_table[c] = [f"{v:.2f}" if pd.notna(v) else "" for v in pi_table[c]]
    return [("per-image", "Per-image test PSNR", [
        Details("dB, mean over seeds, one row per test image", [Table.from_frame(pi_table, sortable=True)])])]


def render(run_dir: Path, data: dict, board: pd.DataFrame, failed: pd.DataFrame, figures: dict) -> tuple[str, str]:
    """(HTML, Markdown) of the report: :func:`document` written by both renderers of ``bench.reporting.document``.

    Args:
        run_dir, data, board, failed, figures: as :func:`document`.
    """
    doc = document(Path(run_dir), data, board, failed, figures)
    return to_html(doc), to_markdown(doc)


def _config_file(run_dir: Path, meta: dict) -> str | None:
    """The text of the run's configuration file (copied into the run folder by ``bench.ablate --config``)."""
    path = Path(run_dir) / CONFIG_COPY
    if not meta.get("config_file") or not path.is_file():
        return None
    try:
        return redact(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError):
        return None


def throughput_table(rows: pd.DataFrame | None) -> pd.DataFrame:
    """The ``bench.throughput`` rows shown in the report, each labelled with its machine, date and commit (rates
    rounded to 3 significant digits)."""
    import pandas as pd

    if rows is None or rows.empty:
        return pd.DataFrame()
    cols = {"model": "model", "precision": "precision", "batch": "batch", "size": "size", "compile": "compile",
            "train_img_per_s": "train img/s", "infer_img_per_s": "inference img/s",
            "train_peak_mib": "train peak MiB", "train_gflop_per_img": "train GFLOP/img",
            "train_tflop_per_s": "train TFLOP/s", "device_name": "device", "hostname": "host",
            "timestamp": "measured", "git_commit": "commit"}
    out = rows[[c for c in cols if c in rows]].rename(columns=cols).copy()
    for c in ("train img/s", "inference img/s", "train peak MiB", "train GFLOP/img", "train TFLOP/s"):
        if c in out:
            out[c] = [f"{float(v):.3g}" if str(v) not in ("", "nan") else "" for v in out[c]]
    if "measured" in out:
        out["measured"] = [str(v)[:16].replace("T", " ") for v in out["measured"]]
    if "commit" in out:
        out["commit"] = [str(v)[:10] for v in out["commit"]]
    return out


def load_throughput(path: Path | None, runs: pd.DataFrame) -> pd.DataFrame | None:
    """Rows of a ``bench.throughput`` CSV (the latest measurement of each model).

    Args:
        path: a CSV named by the user: all its rows are candidates (the report labels each with its machine,
            date and commit). None: ``results/throughput-<this run's device>.csv``, and only its rows measured
            on the same device (same ``device_name``) as the run — never another machine's numbers.
        runs: the run records (``device``, ``device_name``).
    """
    import pandas as pd

    if path is None:
        if "device" not in runs or "device_name" not in runs:
            return None
        name = str(runs["device_name"].iloc[0])
        path = results_root() / f"throughput-{device_slug(str(runs['device'].iloc[0]), name)}.csv"
        if not path.is_file():
            return None
        rows = pd.DataFrame(read_rows(Path(path)))
        rows = rows[rows["device_name"] == name] if "device_name" in rows else rows.iloc[0:0]
    else:
        rows = pd.DataFrame(read_rows(Path(path)))
    if rows.empty or not {"model", "train_img_per_s", "infer_img_per_s"} <= set(rows.columns):
        return None
    if "mode" in rows:
        rows = rows[rows["mode"] == "step"]
    # the latest measurement of each model (earlier rows may use other batch sizes or precisions)
    rows = rows.sort_values("timestamp", kind="stable") if "timestamp" in rows else rows
    rows = rows.drop_duplicates("model", keep="last")
    return rows if not rows.empty else None


def write_report(run_dir, throughput_csv: Path | None = None, n_boot: int = N_BOOT, metric: str = "psnr"
                 ) -> dict[str, Path]:
    """Write ``report.html``, ``report.md``, ``figures/*.png`` and the leaderboard files of a run folder.

    Args:
        run_dir: the run folder (``runs.csv``, ``per_image.csv``, ``history.csv``, ``run.json``; ``samples/`` if
            the run saved sample colorizations).
        throughput_csv: a ``bench.throughput`` CSV to plot next to the run's own training throughput (default:
            ``results/throughput-<device>.csv`` for the run's device, when it exists).
        n_boot: bootstrap resamples per paired comparison.
        metric: the ranking metric (a per-image column; see ``bench.metrics.stats.METRICS``).

    Returns:
        {"html": ..., "md": ..., "figures": folder, "leaderboard": ...}.

    Raises:
        ReportError: ``run_dir`` is not a run folder.
    """
    from bench.reporting import leaderboard
    from bench.reporting import testsets

    run_dir = Path(run_dir)
    data = load(run_dir)
    data["run_dir"], data["n_boot"], data["metric"] = run_dir, n_boot, metric
    board, failed = leaderboard.build(data["runs"], data["per_image"], n_boot=n_boot, metric=metric,
                                      features_dir=Path(run_dir) / "features")
    md_board = leaderboard.to_markdown(board, failed, f"Leaderboard: {run_dir.name}", metric, n_boot)
    # every test set's board, built once: the verdicts and the sections of the sets scored later by bench.evaluate
    data["set_boards"] = testsets.boards(run_dir, board, n_boot, metric)
    data["test_sets"] = testsets.sections(run_dir, board, n_boot, metric, tables=data["set_boards"])
    md_board += testsets.markdown(data["test_sets"])
    atomic_write_text(run_dir / "leaderboard.md", md_board)
    atomic_write_text(run_dir / "leaderboard.csv", board.to_csv(index=False))
    data["throughput"] = load_throughput(throughput_csv, data["runs"])
    figures = make_figures(data, board, run_dir / "figures", data["throughput"])
    html_text, md_text = render(run_dir, data, board, failed, figures)
    atomic_write_text(run_dir / "report.html", html_text)
    atomic_write_text(run_dir / "report.md", md_text)
    return {"html": run_dir / "report.html", "md": run_dir / "report.md", "figures": run_dir / "figures",
            "leaderboard": run_dir / "leaderboard.md"}


def _run_rank_by(run_dir: Path) -> str | None:
    """The ranking metric recorded in a run's ``run.json`` (None if absent or unreadable: the report says so
    elsewhere)."""
    try:
        meta = json.loads((run_dir / "run.json").read_text())
    except (OSError, ValueError):
        return None
    return meta.get("rank_by") if isinstance(meta, dict) else None


@cli.command
def main(argv=None) -> int:
    p = cli.parser("report", __doc__)
    p.add_argument("run_dir", help="a run folder written by python -m bench.ablate")
    p.add_argument("--throughput", default=None, help="a bench.throughput CSV to include (default: "
                   "results/throughput-<device>.csv of the run's device, if present)")
    p.add_argument("--n-boot", type=cli.bounded_int(1, cli.MAX_BOOT), default=N_BOOT,
                   help=f"bootstrap resamples (default {N_BOOT}, at most {cli.MAX_BOOT})")
    p.add_argument("--rank-by", default=None, metavar="METRIC",
                   help=f"ranking metric: one of {', '.join(METRICS)} (default: the run's, else psnr)")
    args = p.parse_args(argv)
    try:
        rank_by = args.rank_by
        if rank_by is None:  # the metric the run itself was ranked by (run.json), else PSNR
            rank_by = _run_rank_by(Path(args.run_dir)) or "psnr"
        if rank_by not in METRICS:
            raise ReportError(f"--rank-by must be one of {', '.join(METRICS)}, not {rank_by!r}")
        out = write_report(args.run_dir, Path(args.throughput) if args.throughput else None, args.n_boot, rank_by)
    except (ReportError, CorruptRecordError, OSError) as err:
        full = isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT)
        if isinstance(err, OSError) and err.errno in (errno.EACCES, errno.EPERM, errno.EROFS) and not (
                err.filename and Path(err.filename).exists()):  # an existing file that cannot be read says so itself
            # the report is written into the run folder: name it, not the temporary file of an atomic write
            raise cli.UsageError(redact(f"cannot write the report into {args.run_dir}: {err.strerror}")) from None
        raise cli.UsageError(redact(write_error_message(err) if full else str(err))) from None
    print(f"wrote {out['html']} and {out['md']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
