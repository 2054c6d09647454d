"""The report of a run folder: leaderboard with paired statistics, plots, sample colorizations, configuration,
environment and how to reproduce it.

    python -m bench.report results/losses-quick-imagenet-sample
    python -m bench.report RUN_DIR --throughput results/throughput-nvidia-h100-80gb-hbm3.csv

Writes into the run folder ``report.html`` (one self-contained file: the figures are embedded as data: URIs),
``report.md`` (figures linked from ``figures/``), ``figures/*.png`` and refreshes ``leaderboard.md``/``.csv``.
"""
from __future__ import annotations

import base64
import errno
import html
import json
import sys
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from . import cli, leaderboard, plots, samples, testsets
from .paths import results_root
from .records import (BASELINES, CorruptRecordError, atomic_write_text, device_slug, read_json, read_rows, redact,
                      write_error_message)
from . import stats as pstats
from .stats import N_BOOT, metric as get_metric

ENV_KEYS = ("device", "device_name", "torch_threads", "torch", "torchvision", "torchmetrics", "numpy", "pandas", "pillow", "optuna",
            "python", "platform", "hostname", "git_commit")

class ReportError(ValueError):
    """The folder is not a run folder (no ``runs.csv``) or cannot be read."""


# ----------------------------------------------------------------------------------------------------- data


def load(run_dir: Path) -> dict:
    """Everything the report needs from a run folder."""
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
    return {"runs": runs, "per_image": per_image, "history": history, "meta": meta, "per_image_missing": missing}


def truth_colourfulness(meta: dict) -> float | None:
    """Mean colourfulness of the ground-truth test images (preprocessed like the evaluation), if they are on disk."""
    files = [Path(p) for p in meta.get("splits", {}).get("test", [])]
    cfg = meta.get("base_config", {})
    if not files or not all(f.is_file() for f in files) or "size" not in cfg:
        return None
    try:
        from .data import ImageStore
        from .metrics import colourfulness

        imgs = ImageStore(files, int(cfg["size"])).centre_crops(int(cfg.get("eval_size", cfg["size"])))
        return float(colourfulness(imgs.float() / 255.0).mean())
    except Exception:  # a figure annotation is not worth failing the report for
        return None


def per_image_table(per_image: pd.DataFrame, order: list[tuple[str, str]]) -> pd.DataFrame:
    """Test PSNR per image (rows) and cell (columns, leaderboard order), averaged over seeds."""
    if per_image.empty:
        return pd.DataFrame()
    piv = per_image.pivot_table(index="image", columns=["model", "cell"], values="psnr", aggfunc="mean")
    cols = [c for c in order if c in piv.columns]
    multi = len({m for m, c in cols if c not in BASELINES}) > 1
    piv = piv[cols]
    piv.columns = [f"{m} / {c}" if multi and c not in BASELINES else c for m, c in cols]
    return piv.reset_index()


def env_table(runs: pd.DataFrame, meta: dict) -> pd.DataFrame:
    """The environment of the runs: each key with its distinct values (several after a resume on another host)."""
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
    """(base configuration as key/value, the grid's cells with what each changes)."""
    base = pd.DataFrame([{"key": k, "value": str(v)} for k, v in meta.get("base_config", {}).items()])
    cells = []
    try:
        from . import grids

        g = grids.get(meta.get("grid", ""))
        cells = [{"cell": c.name, "changes": json.dumps(c.changes)} for c in g.cells]
    except ValueError:
        pass
    if not cells:  # unknown grid: list the cells seen in runs.csv with their loss
        seen = runs[~runs["cell"].isin(BASELINES)].drop_duplicates("cell")
        cells = [{"cell": r["cell"], "changes": f"loss={r.get('loss', '')}"} for _, r in seen.iterrows()]
    return base, pd.DataFrame(cells)


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


def reproduce(meta: dict, runs: pd.DataFrame, run_dir: Path) -> str:
    commit = meta.get("environment", {}).get("git_commit") or (runs["git_commit"].iloc[0] if "git_commit" in runs else "")
    cmd = redact(meta.get("command", "python -m bench.ablate ..."))  # run.json of older versions held passwords
    lines = []
    if commit and commit != "unknown":
        lines.append(f"git checkout {commit.split('+')[0]}" + ("   # the run had uncommitted changes" if "+dirty" in commit else ""))
    lines += ["pip install -e '.[dev]'", cmd, f"python -m bench.report {run_dir}"]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------- figures


def make_figures(data: dict, board: pd.DataFrame, fig_dir: Path, throughput_rows: pd.DataFrame | None) -> dict:
    """Write every figure that the data allows; returns {name: (path, caption)} in display order. Every figure
    uses one palette keyed by cell label (``plots.run_palette``): a cell has the same colour everywhere."""
    fig_dir.mkdir(parents=True, exist_ok=True)
    runs, history, per_image = data["runs"], data["history"], data["per_image"]
    colours = plots.run_palette(runs)
    out = {}
    if plots.psnr_per_cell(runs, fig_dir / "psnr.png", colours):
        out["psnr"] = (fig_dir / "psnr.png", "Test PSNR per cell: mean and 95 % t-interval over seeds; small dots "
                       "are the seeds; dashed line: the greyscale baseline.")
    if plots.val_curves(history, fig_dir / "val_psnr.png", colours):
        out["val_psnr"] = (fig_dir / "val_psnr.png", "Validation PSNR over training steps (mean over seeds, 95 % CI).")
    if plots.psnr_vs_colourfulness(runs, fig_dir / "psnr_colourfulness.png", truth_colourfulness(data["meta"]),
                                   colours):
        out["psnr_colourfulness"] = (fig_dir / "psnr_colourfulness.png",
                                     "Accuracy against vivid colour: higher PSNR usually means duller colours.")
    if plots.throughput(runs, fig_dir / "throughput.png", throughput_rows):
        out["throughput"] = (fig_dir / "throughput.png", "Training throughput per model (images/s).")
    order = [(m, c) for m, c in zip(board["model"], board["cell"]) if c not in BASELINES] if not board.empty else []
    scores = {}
    if not per_image.empty:
        for _, r in per_image.iterrows():
            scores[(str(r["model"]), str(r["cell"]), int(r["seed"]), samples.sample_name(r["image"]))] = float(r["psnr"])
    if samples.plot_grid(data["run_dir"], fig_dir / "samples.png", order, scores, colours):
        out["samples"] = (fig_dir / "samples.png", "Fixed test images: greyscale input, each cell's colorization "
                          "(lowest seed, PSNR under it) and the ground truth.")
    return out


# ----------------------------------------------------------------------------------------------------- writers

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1150px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.45}
h1{border-bottom:2px solid #ccc;padding-bottom:.2em}h2{margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.6em 0;font-size:.88em;max-width:100%}
th,td{border:1px solid #ccc;padding:.25em .55em;text-align:left;vertical-align:top;overflow-wrap:anywhere}
th{background:#f2f2f2}tr:nth-child(even) td{background:#fafafa}
table.board td{white-space:nowrap}table.board th{white-space:normal}
details table{display:block;overflow-x:auto}
ul.verdict li{margin:.3em 0}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #eee}figcaption{font-size:.9em;color:#555}
pre{background:#f6f8fa;padding:.8em;overflow-x:auto;font-size:.85em;white-space:pre-wrap;word-break:break-all}.note{font-size:.92em;color:#333}
"""


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def _md_inline(text: str) -> str:
    """The few Markdown marks used in the notes (**bold**, *italic*, `code`) as HTML."""
    import re

    t = html.escape(text)
    t = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", t)
    t = re.sub(r"\*(.+?)\*", r"<em>\1</em>", t)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", t)


def _table_html(df: pd.DataFrame, cls: str = "") -> str:
    return df.to_html(index=False, escape=True, border=0, na_rep="", classes=cls or None)


def _table_md(df: pd.DataFrame) -> str:
    return df.to_markdown(index=False, disable_numparse=True)


def render(run_dir: Path, data: dict, board: pd.DataFrame, failed: pd.DataFrame, figures: dict) -> tuple[str, str]:
    """(HTML, Markdown) of the report."""
    runs, meta = data["runs"], data["meta"]
    title = f"Colorization benchmark: {run_dir.name}"
    when = datetime.now(timezone.utc).isoformat(timespec="seconds")
    m = get_metric(data.get("metric", "psnr"))
    best = leaderboard.best_cell(board) if not board.empty else None
    summary = []
    if best is not None:
        row = board[(board["model"] == best[0]) & (board["cell"] == best[1])].iloc[0]
        unit = f" {m.unit}" if m.unit else ""
        ci = "" if pd.isna(row["score_ci95"]) else f" ± {m.fmt(row['score_ci95'])}"
        summary.append(f"Top-ranked cell: **{best[1]}** ({best[0]}), {m.fmt(row['score'])}{ci}{unit} test "
                       f"{m.label or m.name} over {int(row['n'])} seed(s)"
                       + (f", {m.fmt(row['delta_grey'], True)}{unit} vs. greyscale" if "delta_grey" in row
                          and not pd.isna(row["delta_grey"]) else "")
                       + (f", {m.fmt(row['delta_mean_colour'], True)}{unit} vs. the mean colour"
                          if "delta_mean_colour" in row and not pd.isna(row["delta_mean_colour"]) else "") + ".")
    verdict = leaderboard.verdict_lines(board, m)
    if data.get("per_image_missing"):  # say why there is no verdict instead of concluding without its input
        verdict = [f"Paired statistics are unavailable: {data['per_image_missing']}, so no cell is called better "
                   f"than, worse than or tied with another."]
    summary.append(f"Grid *{meta.get('grid', runs['grid'].iloc[0] if 'grid' in runs else '?')}*, preset "
                   f"*{meta.get('preset', '?')}*, {meta.get('seeds', runs['seed'].nunique())} seed(s); data: "
                   f"{data_summary(runs, meta)}.")
    n_ok, n_failed = int((runs["status"] == "ok").sum()), int((runs["status"] != "ok").sum())
    summary.append(f"{n_ok} successful run(s) (the grey and mean-colour baseline rows included), {n_failed} failed.")
    base, cells = config_tables(meta, runs)
    env = env_table(runs, meta)
    pi_table = per_image_table(data["per_image"], [(m, c) for m, c in zip(board["model"], board["cell"])]
                               if not board.empty else [])
    if not pi_table.empty:
        pi_table = pi_table.round(2)
    failed_cols = [c for c in ("model", "cell", "seed", "status", "failed_step", "error") if c in failed]
    repro = reproduce(meta, runs, run_dir)
    fig_order = [("psnr", "PSNR per cell"), ("val_psnr", "Validation PSNR over training"),
                 ("psnr_colourfulness", "PSNR against colourfulness"), ("throughput", "Throughput per model"),
                 ("samples", "Sample colorizations")]

    note = leaderboard.stats_note(m, data.get("n_boot", N_BOOT))
    groups = [(leaderboard.AUTOMATIC, f"Ranking by {m.title}", None)]
    if not board.empty and (board["group"] == leaderboard.REFERENCE).any():
        groups.append((leaderboard.REFERENCE, "Reference-based colorizers",
                       "These models get a colour photo as input. They are ranked on the score with *another* test "
                       "photo as reference; with the test photo itself as reference (its own colours) the score is "
                       "an upper bound, not comparable with the automatic colorizers."))
    tables = [(heading, text, leaderboard.ranking_table(board, g, m)) for g, heading, text in groups] \
        if not board.empty else []
    details = leaderboard.details_table(board)

    # ---- Markdown
    md = [f"# {title}", "", f"_Generated {when} by `python -m bench.report`._", ""]
    md += [f"- {s}" for s in summary] + [""]
    if verdict:
        md += ["## Verdict", ""] + [f"- {s}" for s in verdict] + [""]
    md += ["## Leaderboard", ""]
    if not tables:
        md += ["(no successful runs)", ""]
    for heading, text, table in tables:
        md += [f"### {heading}", ""] + ([text, ""] if text else []) + [_table_md(table), ""]
    if tables and ("p_grey" in board or "p_best" in board):
        md += [note, ""]
    if not details.empty:
        md += ["### Details", "", _table_md(details), ""]
    if failed_cols and not failed.empty:
        md += ["## Failed runs", "", _table_md(failed[failed_cols]), ""]
    if data.get("test_sets"):
        md += ["## Other test sets", "", testsets.INTRO, ""]
        for heading, text, table in data["test_sets"]:
            md += [f"### {heading}", ""] + ([text, ""] if text else []) + [_table_md(table), ""]
    for key, heading in fig_order:
        if key in figures:
            path, cap = figures[key]
            md += [f"## {heading}", "", f"![{heading}]({path.relative_to(run_dir).as_posix()})", "", f"_{cap}_", ""]
    tp = throughput_table(data.get("throughput"))
    run_commit = str(runs["git_commit"].iloc[0])[:10] if "git_commit" in runs else "?"
    run_dev = str(runs["device_name"].iloc[0]) if "device_name" in runs else "?"
    tp_note = (f"Measured by `bench.throughput` on synthetic data, not during this run; each row names its device, "
               f"host, date and commit. This run: {run_dev}, commit {run_commit}.")
    if not tp.empty:
        md += ["## Throughput measurements (bench.throughput)", "", tp_note, "", _table_md(tp), ""]
    if not pi_table.empty:
        md += ["## Per-image test PSNR (dB, mean over seeds)", "", _table_md(pi_table), ""]
    md += ["## Configuration", "", "Base configuration (every cell starts from it):", "", _table_md(base), "",
           "Cells of the grid (as defined in this checkout):", "", _table_md(cells), ""]
    md += ["## Environment", "", _table_md(env), "", "## How to reproduce", "", "```bash", repro, "```", ""]
    md_text = "\n".join(md)

    # ---- HTML
    h = ["<!DOCTYPE html>", "<html lang='en'><head><meta charset='utf-8'>", f"<title>{html.escape(title)}</title>",
         f"<style>{CSS}</style></head><body>", f"<h1>{html.escape(title)}</h1>",
         f"<p class='note'>Generated {when} by <code>python -m bench.report</code>.</p>", "<ul>"]
    h += [f"<li>{_md_inline(s)}</li>" for s in summary] + ["</ul>"]
    if verdict:
        h += ["<h2>Verdict</h2>", "<ul class='verdict'>"] + [f"<li>{_md_inline(s)}</li>" for s in verdict]
        h.append("</ul>")
    h.append("<h2>Leaderboard</h2>")
    if not tables:
        h.append("<p>(no successful runs)</p>")
    for heading, text, table in tables:
        h += [f"<h3>{html.escape(heading)}</h3>"] + ([f"<p class='note'>{_md_inline(text)}</p>"] if text else [])
        h.append(_table_html(table, "board"))
    if tables and ("p_grey" in board or "p_best" in board):
        h.append(f"<p class='note'>{_md_inline(note)}</p>")
    if not details.empty:
        h += ["<h3>Details</h3>", _table_html(details, "board")]
    if failed_cols and not failed.empty:
        h += ["<h2>Failed runs</h2>", _table_html(failed[failed_cols])]
    if data.get("test_sets"):
        h += ["<h2>Other test sets</h2>", f"<p class='note'>{_md_inline(testsets.INTRO)}</p>"]
        for heading, text, table in data["test_sets"]:
            h += [f"<h3>{html.escape(heading)}</h3>"] + ([f"<p class='note'>{_md_inline(text)}</p>"] if text else [])
            h.append(_table_html(table, "board"))
    for key, heading in fig_order:
        if key in figures:
            path, cap = figures[key]
            h += [f"<h2>{html.escape(heading)}</h2>", f"<figure><img src='{_data_uri(path)}' alt='{html.escape(heading)}'>",
                  f"<figcaption>{html.escape(cap)}</figcaption></figure>"]
    if not tp.empty:
        h += ["<h2>Throughput measurements (bench.throughput)</h2>", f"<p class='note'>{_md_inline(tp_note)}</p>",
              _table_html(tp)]
    if not pi_table.empty:
        h += ["<h2>Per-image test PSNR</h2>", "<details><summary>dB, mean over seeds, one row per test image"
              "</summary>", _table_html(pi_table), "</details>"]
    h += ["<h2>Configuration</h2>", "<p>Base configuration (every cell starts from it):</p>", _table_html(base),
          "<p>Cells of the grid (as defined in this checkout):</p>", _table_html(cells)]
    splits = meta.get("splits")
    if splits:
        h.append("<details><summary>Image files of each split</summary>")
        for k, files in splits.items():
            h.append(f"<p><strong>{html.escape(k)}</strong> ({len(files)})</p><pre>"
                     + html.escape("\n".join(files)) + "</pre>")
        h.append("</details>")
    if meta:
        h += ["<details><summary>run.json</summary><pre>", html.escape(redact(json.dumps(meta, indent=2))),
              "</pre></details>"]
    h += ["<h2>Environment</h2>", _table_html(env), "<h2>How to reproduce</h2>", f"<pre>{html.escape(repro)}</pre>",
          "</body></html>"]
    return "\n".join(h), md_text


def throughput_table(rows: pd.DataFrame | None) -> pd.DataFrame:
    """The ``bench.throughput`` rows shown in the report, each labelled with its machine, date and commit (rates
    rounded to 3 significant digits)."""
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
        metric: the ranking metric (a per-image column; see ``bench.stats.METRICS``).

    Returns:
        {"html": ..., "md": ..., "figures": folder, "leaderboard": ...}.

    Raises:
        ReportError: ``run_dir`` is not a run folder.
    """
    run_dir = Path(run_dir)
    data = load(run_dir)
    data["run_dir"], data["n_boot"], data["metric"] = run_dir, n_boot, metric
    board, failed = leaderboard.build(data["runs"], data["per_image"], n_boot=n_boot, metric=metric,
                                      features_dir=Path(run_dir) / "features")
    md_board = leaderboard.to_markdown(board, failed, f"Leaderboard: {run_dir.name}", metric, n_boot)
    data["test_sets"] = testsets.sections(run_dir, board, n_boot, metric)  # sets scored later by bench.evaluate
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
    p.add_argument("--n-boot", type=int, default=N_BOOT, help=f"bootstrap resamples (default {N_BOOT})")
    p.add_argument("--rank-by", default=None, metavar="METRIC",
                   help=f"ranking metric: one of {', '.join(pstats.METRICS)} (default: the run's, else psnr)")
    args = p.parse_args(argv)
    try:
        rank_by = args.rank_by
        if rank_by is None:  # the metric the run itself was ranked by (run.json), else PSNR
            rank_by = _run_rank_by(Path(args.run_dir)) or "psnr"
        if rank_by not in pstats.METRICS:
            raise ReportError(f"--rank-by must be one of {', '.join(pstats.METRICS)}, not {rank_by!r}")
        out = write_report(args.run_dir, Path(args.throughput) if args.throughput else None, args.n_boot, rank_by)
    except (ReportError, CorruptRecordError, OSError) as err:
        full = isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT)
        raise cli.UsageError(redact(write_error_message(err) if full else str(err))) from None
    print(f"wrote {out['html']} and {out['md']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
