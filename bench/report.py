"""The report of a run folder: leaderboard with paired statistics, plots, sample colorizations, configuration,
environment and how to reproduce it.

    colorbench report results/losses-quick-imagenet-sample
    colorbench report RUN_DIR --throughput results/throughput-nvidia-h100-80gb-hbm3.csv

Writes into the run folder ``report.html`` (one self-contained file: figures and the sample gallery embedded as
data: URIs, a few lines of inline script for sorting tables and switching the gallery's cell; it links to the
run's weights and configurations in ``models/``), ``report.md`` (plain Markdown, figures linked from ``figures/``),
``figures/*.png`` and refreshes ``leaderboard.md``/``.csv``. Everything about the run (cells, configuration, the
``--config`` file, commands) is read from the run folder's own records, never from the installed code.
"""
from __future__ import annotations

import base64
import errno
import html
import json
import math
import shlex
import sys
import urllib.parse
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from . import cli, leaderboard, plots, samples, testsets
from .paths import results_root
from .records import (BASELINES, CONFIG_COPY, CorruptRecordError, atomic_write_text, device_slug, read_json,
                      read_rows, redact, write_error_message)
from . import stats as pstats
from .stats import N_BOOT, metric as get_metric

ENV_KEYS = ("colorbench", "git_commit", "device", "device_name", "torch_threads", "torch", "torchvision", "torchmetrics", "numpy", "pandas", "pillow", "optuna",
            "python", "platform", "hostname")

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
    """(base configuration as key/value, the grid's cells with what each changes), from the run's own records:
    ``run.json`` (``cells``, as the run defined them, from a named grid or a ``--config`` file); for a run.json
    without them, the cells seen in ``runs.csv`` with their loss."""
    base = pd.DataFrame([{"key": k, "value": str(v)} for k, v in meta.get("base_config", {}).items()])
    losses = {}
    if "loss" in runs:
        losses = {str(r["cell"]): str(r["loss"]) for _, r in runs[~runs["cell"].isin(BASELINES)].iterrows()}
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
        for key in meta["jobs"]:  # model/cell/seed[/fold<f>] (bench.engine.key_str); a cell name may hold "/"
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
    from .records import COMMANDS_FILE

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
*{box-sizing:border-box}[hidden]{display:none!important}
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1150px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.45}
h1{border-bottom:2px solid #ccc;padding-bottom:.2em;font-size:1.6em}h2{margin-top:1.6em;border-bottom:1px solid #ddd}
h1,h2,h3,p,li,figcaption,summary{overflow-wrap:anywhere}
.scroll{overflow-x:auto;max-width:100%;margin:.6em 0}
table{border-collapse:collapse;font-size:.88em}
th,td{border:1px solid #ccc;padding:.25em .55em;text-align:left;vertical-align:top}
th{background:#f2f2f2;white-space:nowrap}tr:nth-child(even) td{background:#fafafa}
table.board td{white-space:nowrap}
table.sortable th{cursor:pointer}table.sortable th[data-dir=asc]::after{content:" ▲"}
table.sortable th[data-dir=desc]::after{content:" ▼"}
ul.verdict li{margin:.3em 0}
nav.toc{background:#f6f8fa;padding:.4em 1em;border:1px solid #e3e3e3}nav.toc ol{margin:.3em 0;padding-left:1.4em}
figure{margin:1em 0}figure img{max-width:100%;height:auto;border:1px solid #eee}figcaption{font-size:.9em;color:#555}
pre{background:#f6f8fa;padding:.8em;overflow-x:auto;font-size:.85em;white-space:pre-wrap;word-break:break-all}
.note{font-size:.92em;color:#333}.warn{background:#fff4e5;border-left:4px solid #f0a000;padding:.4em .8em}
.gallery{display:grid;grid-template-columns:repeat(auto-fill,minmax(230px,1fr));gap:.8em}
.card{margin:0;border:1px solid #e3e3e3;padding:.3em}.trio{display:flex;gap:2px}
.trio span{flex:1;min-width:0;text-align:center;font-size:.75em;color:#555}.trio img{width:100%;height:auto;display:block}
@media (max-width:600px){body{margin:.5em auto;padding:0 .6em}h1{font-size:1.3em}}
"""

#: inline script: click a header of a ``sortable`` table to sort it (numbers by value); the gallery's cell switch
SCRIPT = """
document.querySelectorAll('table.sortable th').forEach(function(th){th.tabIndex=0;th.title='click to sort';
th.addEventListener('click',function(){var t=th.closest('table'),b=t.tBodies[0],row=th.parentNode,
i=Array.prototype.indexOf.call(row.children,th),asc=th.dataset.dir!=='asc';
row.querySelectorAll('th').forEach(function(h){delete h.dataset.dir});th.dataset.dir=asc?'asc':'desc';
function key(r){var s=(r.cells[i]||{}).textContent||'',m=s.replace(/\u2212/g,'-').match(/[-+]?\\d+(\\.\\d+)?(e[-+]?\\d+)?/i);
return m?parseFloat(m[0]):s.trim().toLowerCase()}
Array.from(b.rows).sort(function(x,y){var a=key(x),c=key(y),o=typeof a===typeof c?(a<c?-1:a>c?1:0):(typeof a==='number'?-1:1);
return asc?o:-o}).forEach(function(r){b.appendChild(r)})})});
var pick=document.getElementById('gallery-cell');if(pick){pick.addEventListener('change',function(){
document.querySelectorAll('.gallery img[data-cell]').forEach(function(im){im.hidden=im.dataset.cell!==pick.value})})}
"""


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def _thumbnail_uri(path: Path, side: int = 256) -> str:
    """A JPEG of at most ``side`` pixels a side as a data: URI (the gallery holds every test image × cell)."""
    import io

    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB")
        im.thumbnail((side, side))
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _md_inline(text: str) -> str:
    """The few Markdown marks used in the notes (**bold**, *italic*, `code`) as HTML."""
    import re

    t = html.escape(text)
    t = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", t)
    t = re.sub(r"\*(.+?)\*", r"<em>\1</em>", t)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", t)


def _md_safe(text) -> str:
    """Text for report.md with ``<``, ``>``, ``&`` and ``|`` backslash-escaped outside `code` spans: names of
    folders, files or cells never become raw HTML or break a table."""
    import re

    parts = str(text).split("`")
    return "`".join(p if i % 2 else re.sub(r"([<>&|])", r"\\\1", p) for i, p in enumerate(parts))


def _table_html(df: pd.DataFrame, cls: str = "", sortable: bool = False) -> str:
    classes = " ".join(c for c in (cls, "sortable" if sortable else "") if c)
    return ("<div class='scroll'>" + df.to_html(index=False, escape=True, border=0, na_rep="", classes=classes or None)
            + "</div>")


def _table_md(df: pd.DataFrame) -> str:
    safe = df.copy()
    safe.columns = [_md_safe(c) for c in safe.columns]
    for c in safe.columns:
        safe[c] = [v if not isinstance(v, str) else _md_safe(v) for v in safe[c]]
    return safe.to_markdown(index=False, disable_numparse=True)


def set_verdicts(run_dir: Path, board: pd.DataFrame, m, n_boot: int) -> list[tuple[str, dict, list[str]]]:
    """(test set, ``leaderboard.verdict`` dict, verdict sentences) for the run's own test set and every set that
    ``bench.evaluate`` scored."""
    out = []
    for name, b in testsets.boards(run_dir, board, n_boot, m).items():
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
    from .checkpoint import saved_models

    rows = []
    for s in saved_models(run_dir):
        rel = s.folder.relative_to(run_dir).as_posix()
        rows.append({"model": s.model, "cell": s.cell, "seed": s.seed, "fold": "" if s.fold is None else s.fold,
                     "folder": rel})
    return pd.DataFrame(rows)


def _models_html(table: pd.DataFrame) -> str:
    from .checkpoint import CONFIG, WEIGHTS

    head = "".join(f"<th>{c}</th>" for c in ("model", "cell", "seed", "fold", "weights", "configuration"))
    body = []
    for _, r in table.iterrows():
        link = html.escape(urllib.parse.quote(r["folder"]), quote=True)
        body.append("<tr>" + "".join(f"<td>{html.escape(str(r[c]))}</td>" for c in ("model", "cell", "seed", "fold"))
                    + f"<td><a href='{link}/{WEIGHTS}'>{WEIGHTS}</a></td><td><a href='{link}/{CONFIG}'>{CONFIG}</a>"
                    "</td></tr>")
    return (f"<div class='scroll'><table class='sortable'><thead><tr>{head}</tr></thead><tbody>{''.join(body)}"
            "</tbody></table></div>")


def gallery_html(run_dir: Path, order: list[tuple[str, str]], scores: dict) -> str:
    """Every sample image of the run (all test images when training saved them all): greyscale input, one cell's
    colorization (a switch picks the cell; its lowest seed), ground truth. "" without samples."""
    found = samples.find_samples(run_dir)
    images, folders = found["images"], found["cells"]
    if not images or not folders:
        return ""
    cols = samples.grid_columns(folders, order)
    root = Path(run_dir) / "samples"
    options = "".join(f"<option value='{i}'>{html.escape(label)} (seed {key[2]})</option>"
                      for i, (label, key, _) in enumerate(cols))
    cards = []
    for stem in images:
        cells = []
        for i, (label, key, folder) in enumerate(cols):
            f = folder / f"{stem}.png"
            if f.is_file():
                v = scores.get((*key, stem))
                alt = f"{label}" + (f": {v:.2f}" if v is not None else "")
                cells.append(f"<img data-cell='{i}'{'' if i == 0 else ' hidden'} loading='lazy' "
                             f"src='{_thumbnail_uri(f)}' alt='{html.escape(alt, quote=True)}' "
                             f"title='{html.escape(alt, quote=True)}'>")
        if not cells:
            continue
        grey, truth = root / "grey" / f"{stem}.png", root / "truth" / f"{stem}.png"

        def side(f, what):
            return f"<span><img src='{_thumbnail_uri(f)}' alt='{what}'>{what}</span>" if f.is_file() else \
                f"<span>{what}</span>"

        cards.append(f"<figure class='card'><div class='trio'>{side(grey, 'input')}<span>{''.join(cells)}"
                     f"colorized</span>{side(truth, 'truth')}</div><figcaption>{html.escape(stem)}</figcaption>"
                     "</figure>")
    return (f"<p><label for='gallery-cell'>Cell: </label><select id='gallery-cell'>{options}</select> "
            f"<span class='note'>({len(cards)} test images; hover a colorization for its score)</span></p>"
            f"<div class='gallery'>{''.join(cards)}</div>")


def render(run_dir: Path, data: dict, board: pd.DataFrame, failed: pd.DataFrame, figures: dict) -> tuple[str, str]:
    """(HTML, Markdown) of the report."""
    runs, meta = data["runs"], data["meta"]
    title = f"Colorization benchmark: {run_dir.name}"
    when = datetime.now(timezone.utc).isoformat(timespec="seconds")
    m = get_metric(data.get("metric", "psnr"))
    env = env_table(runs, meta)
    version = next((r["value"] for _, r in env.iterrows() if r["key"] == "colorbench"), "(not recorded)")
    commit = next((r["value"] for _, r in env.iterrows() if r["key"] == "git_commit"), "")
    missing = missing_runs(meta, run_dir)
    n_planned = len(expected_keys(meta))
    unfinished = None
    if not missing.empty:
        cells_missing = ", ".join(dict.fromkeys(missing["cell"]))
        unfinished = (f"**Unfinished grid**: {len(missing)} of {n_planned} planned runs are missing (cells: "
                      f"{cells_missing}; listed under *Missing runs*). The ranking and verdict below cover the "
                      f"finished runs only and name no winner; run the same command again to finish the grid.")
    best = leaderboard.best_cell(board) if not board.empty else None
    summary = [f"Made by colorbench {version}" + (f", git commit {commit}" if commit else "") + "."]
    if unfinished:
        summary.append(unfinished)
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
    verdicts = set_verdicts(run_dir, board, m, data.get("n_boot", N_BOOT)) if not board.empty else []
    if data.get("per_image_missing"):  # say why there is no verdict instead of concluding without its input
        verdicts = [(verdicts[0][0] if verdicts else "own test set", {},
                     [(f"Paired statistics are unavailable: {data['per_image_missing']}, so no cell is called "
                       f"better than, worse than or tied with another.")])]
    disagree = disagreement(verdicts)
    summary.append(f"Grid *{meta.get('grid', runs['grid'].iloc[0] if 'grid' in runs else '?')}*, preset "
                   f"*{meta.get('preset', '?')}*, {meta.get('seeds', runs['seed'].nunique())} seed(s); data: "
                   f"{data_summary(runs, meta)}.")
    n_ok, n_failed = int((runs["status"] == "ok").sum()), int((runs["status"] != "ok").sum())
    summary.append(f"{n_ok} successful run(s) (the grey and mean-colour baseline rows included), {n_failed} failed"
                   + (f", {len(missing)} missing" if not missing.empty else "") + ".")
    base, cells = config_tables(meta, runs)
    pi_table = per_image_table(data["per_image"], [(m_, c) for m_, c in zip(board["model"], board["cell"])]
                               if not board.empty else [])
    if not pi_table.empty:
        pi_table = pi_table.round(2)
    failed_cols = [c for c in ("model", "cell", "seed", "fold", "status", "failed_step", "error") if c in failed]
    repro = reproduce(meta, runs, run_dir)
    config_file = _config_file(run_dir, meta)
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
    saved = models_table(run_dir)
    order = [(m_, c) for m_, c in zip(board["model"], board["cell"]) if c not in BASELINES] if not board.empty else []
    scores = {}
    if not data["per_image"].empty:
        for _, r in data["per_image"].iterrows():
            scores[(str(r["model"]), str(r["cell"]), int(r["seed"]), samples.sample_name(r["image"]))] = \
                float(r[m.name]) if m.name in r and pd.notna(r[m.name]) else None
    gallery = gallery_html(run_dir, order, scores)
    tp = throughput_table(data.get("throughput"))
    run_commit = str(runs["git_commit"].iloc[0])[:10] if "git_commit" in runs else "?"
    run_dev = str(runs["device_name"].iloc[0]) if "device_name" in runs else "?"
    tp_note = (f"Measured by `bench.throughput` on synthetic data, not during this run; each row names its device, "
               f"host, date and commit. This run: {run_dev}, commit {run_commit}.")
    cells_note = ("Cells of the grid, as the run recorded them in run.json"
                  + (f" (defined in the configuration file `{meta['config_file']['path']}`, copied below)"
                     if config_file else "") + ":")

    # Sections: (id, heading, Markdown lines, HTML parts); the table of contents lists them in this order.
    sections = []
    verdict_md, verdict_html = [], []
    for i, (name, _, lines) in enumerate(verdicts):
        if not lines:
            continue
        head = f"Test set {name}" + (" (the run's own)" if i == 0 else " (re-scored by colorbench evaluate)")
        verdict_md += [f"### {_md_safe(head)}", ""] + [f"- {_md_safe(s)}" for s in lines] + [""]
        verdict_html += [f"<h3>{html.escape(head)}</h3>", "<ul class='verdict'>"] + \
            [f"<li>{_md_inline(s)}</li>" for s in lines] + ["</ul>"]
    if disagree:
        verdict_md = [f"**{_md_safe(disagree)}**", ""] + verdict_md
        verdict_html = [f"<p class='warn'>{html.escape(disagree)}</p>"] + verdict_html
    if unfinished:
        verdict_md = [_md_safe(unfinished), ""] + verdict_md
        verdict_html = [f"<p class='warn'>{_md_inline(unfinished)}</p>"] + verdict_html
    if verdict_md:
        sections.append(("verdict", "Verdict" + (" (provisional: unfinished grid)" if unfinished else ""),
                         verdict_md, verdict_html))
    lb_md, lb_html = [], []
    if not tables:
        lb_md, lb_html = ["(no successful runs)", ""], ["<p>(no successful runs)</p>"]
    for heading, text, table in tables:
        lb_md += [f"### {heading}", ""] + ([text, ""] if text else []) + [_table_md(table), ""]
        lb_html += [f"<h3>{html.escape(heading)}</h3>"] + ([f"<p class='note'>{_md_inline(text)}</p>"] if text else [])
        lb_html.append(_table_html(table, "board", sortable=True))
    if tables and ("p_grey" in board or "p_best" in board):
        lb_md += [note, ""]
        lb_html.append(f"<p class='note'>{_md_inline(note)}</p>")
    if not details.empty:
        lb_md += ["### Details", "", _table_md(details), ""]
        lb_html += ["<h3>Details</h3>", _table_html(details, "board", sortable=True)]
    sections.append(("leaderboard", "Leaderboard", lb_md, lb_html))
    if not missing.empty:
        sections.append(("missing", "Missing runs", ["Planned in run.json but not in runs.csv (not finished, not failed):",
                                                     "", _table_md(missing), ""],
                         ["<p>Planned in run.json but not in runs.csv (not finished, not failed):</p>",
                          _table_html(missing, sortable=True)]))
    if failed_cols and not failed.empty:
        sections.append(("failed", "Failed runs", [_table_md(failed[failed_cols]), ""],
                         [_table_html(failed[failed_cols], sortable=True)]))
    if data.get("test_sets"):
        ts_md, ts_html = [_md_safe(testsets.INTRO), ""], [f"<p class='note'>{_md_inline(testsets.INTRO)}</p>"]
        for heading, text, table in data["test_sets"]:
            ts_md += [f"### {_md_safe(heading)}", ""] + ([_md_safe(text), ""] if text else []) + [_table_md(table), ""]
            ts_html += [f"<h3>{html.escape(heading)}</h3>"] + \
                ([f"<p class='note'>{_md_inline(text)}</p>"] if text else []) + \
                [_table_html(table, "board", sortable=True)]
        sections.append(("test-sets", "Other test sets", ts_md, ts_html))
    for key, heading in fig_order:
        if key in figures:
            path, cap = figures[key]
            sections.append((f"fig-{key}", heading,
                             [f"![{heading}]({path.relative_to(run_dir).as_posix()})", "", f"_{cap}_", ""],
                             [f"<figure><img src='{_data_uri(path)}' alt='{html.escape(heading)}'>",
                              f"<figcaption>{html.escape(cap)}</figcaption></figure>"]))
    if gallery:
        sections.append(("gallery", "Sample gallery",
                         [("Every saved sample image (greyscale input, each cell's colorization, ground truth) is in "
                           "`samples/`; report.html shows them with a switch between cells."), ""],
                         [("<p class='note'>Every test image the run saved: greyscale input, the chosen cell's "
                           "colorization (its lowest seed) and the ground truth.</p>"), gallery]))
    if not saved.empty:
        sections.append(("models", "Trained models",
                         [("Weights (`model.safetensors`) and configuration (`config.json`) of each run, under the "
                           "run folder:"), "", _table_md(saved), ""],
                         [("<p class='note'>Links into the run folder (they work beside it): each run's weights "
                           "and configuration.</p>"), _models_html(saved)]))
    if not tp.empty:
        sections.append(("throughput", "Throughput measurements (bench.throughput)",
                         [_md_safe(tp_note), "", _table_md(tp), ""],
                         [f"<p class='note'>{_md_inline(tp_note)}</p>", _table_html(tp, sortable=True)]))
    if not pi_table.empty:
        sections.append(("per-image", "Per-image test PSNR",
                         ["dB, mean over seeds, one row per test image:", "", _table_md(pi_table), ""],
                         ["<details><summary>dB, mean over seeds, one row per test image</summary>",
                          _table_html(pi_table, sortable=True), "</details>"]))
    conf_md = ["Base configuration (every cell starts from it):", "", _table_md(base), "", _md_safe(cells_note), "",
               _table_md(cells), ""]
    conf_html = ["<p>Base configuration (every cell starts from it):</p>", _table_html(base),
                 f"<p>{_md_inline(cells_note)}</p>", _table_html(cells)]
    if config_file:
        conf_md += [f"The configuration file (`{CONFIG_COPY}` in the run folder):", "", "```yaml", config_file,
                    "```", ""]
        conf_html += [f"<p>The configuration file (<code>{CONFIG_COPY}</code> in the run folder):</p>",
                      f"<pre>{html.escape(config_file)}</pre>"]
    splits = meta.get("splits")
    if splits:
        conf_html.append("<details><summary>Image files of each split</summary>")
        for k, files in splits.items():
            conf_html.append(f"<p><strong>{html.escape(k)}</strong> ({len(files)})</p><pre>"
                             + html.escape("\n".join(files)) + "</pre>")
        conf_html.append("</details>")
    if meta:
        conf_html += ["<details><summary>run.json</summary><pre>", html.escape(redact(json.dumps(meta, indent=2))),
                      "</pre></details>"]
    sections.append(("configuration", "Configuration", conf_md, conf_html))
    sections.append(("environment", "Environment", [_table_md(env), ""], [_table_html(env)]))
    sections.append(("reproduce", "How to reproduce", ["Every command that made this folder, in order:", "",
                                                       "```bash", repro, "```", ""],
                     ["<p>Every command that made this folder, in order:</p>", f"<pre>{html.escape(repro)}</pre>"]))

    # ---- Markdown (plain: no raw HTML)
    md = [f"# {_md_safe(title)}", "", f"_Generated {when} by `colorbench report`._", ""]
    md += [f"- {_md_safe(s)}" for s in summary] + [""]
    md += ["Contents: " + " · ".join(f"[{h}](#{_md_anchor(h)})" for _, h, _, _ in sections), ""]
    for _, heading, lines, _ in sections:
        md += [f"## {heading}", ""] + lines
    md_text = "\n".join(md)

    # ---- HTML
    h = ["<!DOCTYPE html>", "<html lang='en'><head><meta charset='utf-8'>",
         "<meta name='viewport' content='width=device-width, initial-scale=1'>",
         f"<title>{html.escape(title)}</title>", f"<style>{CSS}</style></head><body>", f"<h1>{html.escape(title)}</h1>",
         f"<p class='note'>Generated {when} by <code>colorbench report</code>.</p>", "<ul>"]
    h += [f"<li>{_md_inline(s)}</li>" for s in summary] + ["</ul>"]
    h += ["<nav class='toc' aria-label='Contents'><strong>Contents</strong><ol>"]
    h += [f"<li><a href='#{sid}'>{html.escape(heading)}</a></li>" for sid, heading, _, _ in sections]
    h += ["</ol></nav>"]
    for sid, heading, _, parts in sections:
        h += [f"<h2 id='{sid}'>{html.escape(heading)}</h2>", *parts]
    h += [f"<script>{SCRIPT}</script>", "</body></html>"]
    return "\n".join(h), md_text


def _md_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading."""
    import re

    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


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
