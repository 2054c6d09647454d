"""bench.report on a small real run: every file is written, the HTML parses and embeds its images."""
from __future__ import annotations

import base64
import errno
import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch

from bench import ablate, report
from bench.config.cell import preset
from bench.reporting import samples
from bench.training.loop import prepare
import models

TINY = ["--set", "size=32", "--set", "crop=32", "--set", "eval_size=32", "--set", "batch_size=4",
        "--set", "val_every=1"]


class Page(HTMLParser):
    """Collects what the checks need: image sources, tables, headings."""

    def __init__(self):
        super().__init__()
        self.imgs, self.tables, self.h2, self._in_h2 = [], 0, [], False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.imgs.append(a.get("src", ""))
        elif tag == "table":
            self.tables += 1
        elif tag == "h2":
            self._in_h2 = True
            self.h2.append("")
        for k in ("href", "src"):  # nothing may be fetched from outside the file
            v = a.get(k, "")
            assert not v.startswith(("http:", "https:", "file:")), f"external reference {v[:60]}"

    def handle_endtag(self, tag):
        if tag == "h2":
            self._in_h2 = False

    def handle_data(self, data):
        if self._in_h2:
            self.h2[-1] += data


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A real (tiny) smoke grid: 2 cells × 2 seeds, 2 steps on 32-px crops of the bundled Kodak24, with samples."""
    out = tmp_path_factory.mktemp("run") / "smoke"
    assert ablate.main(["--grid", "smoke", "--steps", "2", "--seeds", "2", "--folds", "1", "--out", str(out),
                        "--no-progress",
                        *TINY]) == 0
    # ablate does not save samples (yet): colorize with freshly built networks to exercise the same files
    cfg = preset("quick").replace(size=32, crop=32, eval_size=32)
    prep = prepare(cfg)
    for cell, head in (("mse", "ab"), ("kl", "bins")):
        for seed in (0, 1):
            torch.manual_seed(seed)
            net = models.build("unet_vgg16", head=head, width=cfg.width)
            written = samples.save_samples(out, "unet_vgg16", cell, seed, prep, net)
            assert len(written) == samples.N_SAMPLES and all(p.is_file() for p in written)
    return out


def test_report_writes_every_file(run_dir):
    assert report.main([str(run_dir), "--n-boot", "500"]) == 0
    for name in ("report.html", "report.md", "leaderboard.md", "leaderboard.csv"):
        assert (run_dir / name).stat().st_size > 0, name
    for fig in ("psnr", "val_psnr", "psnr_colourfulness", "throughput", "samples"):
        assert (run_dir / "figures" / f"{fig}.png").stat().st_size > 1000, fig
    md = (run_dir / "report.md").read_text()
    assert "## Leaderboard" in md and "p vs best" in md and "figures/samples.png" in md
    assert "python -m bench.ablate --grid smoke" in md  # how to reproduce


def test_report_html_is_self_contained(run_dir):
    if not (run_dir / "report.html").exists():
        report.main([str(run_dir), "--n-boot", "500"])
    page = Page()
    page.feed((run_dir / "report.html").read_text())
    page.close()
    assert page.tables >= 4  # leaderboard, per-image, configuration, cells, environment
    figures = [src for src in page.imgs if src.startswith("data:image/png")]
    assert len(figures) == 5
    assert all(src.startswith("data:image/jpeg;base64,") for src in page.imgs if src not in figures)  # gallery
    for src in figures:
        assert src.startswith("data:image/png;base64,")
        png = base64.b64decode(src.split(",", 1)[1])
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000
    for heading in ("Leaderboard", "Sample colorizations", "Configuration", "Environment", "How to reproduce"):
        assert heading in page.h2


def test_report_renders_in_headless_chromium(run_dir, tmp_path):
    exe = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if exe is None:
        pytest.skip("no chromium binary: the HTML is only checked with html.parser")
    if not (run_dir / "report.html").exists():
        report.main([str(run_dir), "--n-boot", "500"])
    shot = tmp_path / "report.png"
    subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={shot}",
                    "--window-size=1200,3000", (run_dir / "report.html").resolve().as_uri()],
                   capture_output=True, timeout=120, check=False)
    assert shot.is_file() and shot.stat().st_size > 10_000
    from PIL import Image

    with Image.open(shot) as im:
        assert im.size == (1200, 3000)
        # not a blank page: a rendered report has many distinct colours (text, plots, photos)
        assert len(im.convert("RGB").getcolors(maxcolors=1 << 20) or []) > 100


def test_report_rejects_a_folder_without_runs(tmp_path, capsys):
    assert report.main([str(tmp_path)]) == 2
    assert "no runs.csv" in capsys.readouterr().err


def test_report_has_a_verdict_split_tables_and_no_tied(run_dir):
    if not (run_dir / "report.md").exists():
        report.main([str(run_dir), "--n-boot", "500"])
    md = (run_dir / "report.md").read_text()
    board_part = md.split("## Configuration")[0]
    assert "## Verdict" in md and "### Ranking by PSNR (dB)" in md and "### Details" in md
    assert "fewer than 20" in md  # the bundled split has 6 test images: the verdict warns
    assert "tied" not in board_part and "n.s." in board_part
    assert "over images × seeds" in board_part and "± over seeds" in board_part  # each interval says its level
    # the ranking table is narrow: no SSIM/colourfulness/model columns (they are in the details table)
    ranking = board_part.split("### Ranking by PSNR (dB)")[1].split("###")[0]
    header = [line for line in ranking.splitlines() if line.startswith("| #")][0]
    assert "SSIM" not in header and "model" not in header and header.count("|") <= 12  # 3 comparisons: grey, mean, best


def test_terminal_leaderboard_is_compact(run_dir):
    from bench.reporting import leaderboard

    _, text = leaderboard.write(run_dir)
    assert max(len(line) for line in text.splitlines()) <= 100
    assert "Verdict:" in text and "mse" in text and "kl" in text
    assert (run_dir / "figures" / "psnr.png").is_file() and not (run_dir / "psnr.png").exists()


def test_sample_grid_labels_are_the_cell_names(tmp_path):
    folders = {("unet_vgg16", "mse_adain_style"): {1: tmp_path / "s1", 0: tmp_path / "s0"},
               ("unet_vgg16", "mse"): {0: tmp_path / "m0"}, ("unet_vgg16", "old_cell"): {2: tmp_path / "o2"}}
    cols = samples.grid_columns(folders, [("unet_vgg16", "mse"), ("unet_vgg16", "mse+adain_style")])
    assert [c[0] for c in cols] == ["mse", "mse+adain_style", "old_cell"]
    assert cols[1][1:] == (("unet_vgg16", "mse+adain_style", 0), tmp_path / "s0")  # lowest seed


def test_one_palette_keyed_by_cell_name_in_every_figure(run_dir, monkeypatch):
    from bench.reporting import plots

    pal = plots.run_palette(report.load(run_dir)["runs"])
    assert pal["grey"] == plots.GREY_COLOUR and {"mse", "kl"} <= set(pal)
    assert len(set(pal.values())) == len(pal)  # distinct cells, distinct colours
    assert plots.palette(["kl", "mse", "grey"]) == pal  # a function of the cell names only
    seen = {}
    for name in ("psnr_per_cell", "val_curves", "psnr_vs_colourfulness"):
        original = getattr(plots, name)

        def spy(*args, _name=name, _orig=original, **kw):
            seen[_name] = args[-1] if len(args) >= 3 and isinstance(args[-1], dict) else kw.get("colours")
            return _orig(*args, **kw)
        monkeypatch.setattr(plots, name, spy)
    original_grid = samples.plot_grid
    monkeypatch.setattr(samples, "plot_grid", lambda *a, **k: seen.setdefault("samples", a[4]) and original_grid(*a))
    report.write_report(run_dir, n_boot=200)
    assert set(seen) == {"psnr_per_cell", "val_curves", "psnr_vs_colourfulness", "samples"}
    assert all(v == pal for v in seen.values()), seen


def test_automatic_throughput_rows_come_from_the_runs_own_device(tmp_path, monkeypatch):
    import csv

    import pandas as pd

    from bench import throughput

    here = "Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz (x86_64, 8 cores, 8 threads)"
    other = "Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz (x86_64, 8 cores, 4 threads)"  # same file name, other setup
    monkeypatch.setenv("COLORBENCH_RESULTS", str(tmp_path))
    path = tmp_path / f"throughput-{throughput.device_slug('cpu', here)}.csv"
    cols = ["timestamp", "mode", "model", "train_img_per_s", "infer_img_per_s", "device_name", "hostname", "git_commit"]
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(cols)
        w.writerow(["2026-01-01T10:00:00+00:00", "step", "unet_vgg16", "10", "30", here, "a", "abc1234def5678"])
        w.writerow(["2026-01-02T10:00:00+00:00", "step", "unet_vgg19", "8", "20", other, "b", "9999999"])
    runs = pd.DataFrame([{"device": "cpu", "device_name": here, "git_commit": "abc1234"}])
    rows = report.load_throughput(None, runs)
    assert list(rows["model"]) == ["unet_vgg16"]
    table = report.throughput_table(rows)
    assert {"device", "host", "measured", "commit"} <= set(table.columns)
    assert table["measured"].iloc[0] == "2026-01-01 10:00" and table["commit"].iloc[0] == "abc1234def"
    # another machine's run finds nothing
    assert report.load_throughput(None, pd.DataFrame([{"device": "cpu", "device_name": "AMD EPYC (x86_64, 8 cores, "
                                                                                       "8 threads)"}])) is None


# ------------------------------------------------------------------------------------------------ issue 21/22: the page


class Structure(HTMLParser):
    """Tables and their wrappers, ids, links, the contents, the gallery."""

    def __init__(self):
        super().__init__()
        self.stack, self.tables, self.ids, self.links, self.toc = [], [], set(), [], []
        self.cards, self.options, self.meta, self.scripts = 0, 0, [], 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self.tables.append((a.get("class") or "", [dict(x[1]).get("class", "") for x in self.stack[-1:]]))
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "a":
            (self.toc if any(t == "nav" for t, _ in self.stack) else self.links).append(a.get("href", ""))
        if tag == "figure" and "card" in (a.get("class") or ""):
            self.cards += 1
        if tag == "option":
            self.options += 1
        if tag == "meta":
            self.meta.append(a)
        if tag == "script":
            self.scripts += 1
            assert "src" not in a  # inline only: one offline file
        if tag not in ("img", "meta", "br", "input", "link"):
            self.stack.append((tag, attrs))

    def handle_endtag(self, tag):
        while self.stack:
            if self.stack.pop()[0] == tag:
                break


@pytest.fixture(scope="module")
def page(run_dir):
    report.main([str(run_dir), "--n-boot", "200"])
    text = (run_dir / "report.html").read_text()
    p = Structure()
    p.feed(text)
    return p, text


def test_report_page_is_navigable(run_dir, page):
    p, text = page
    assert {"name": "viewport", "content": "width=device-width, initial-scale=1"} in p.meta
    assert p.tables and all("scroll" in parents for _, parents in p.tables), p.tables  # every table scrolls alone
    assert p.toc and all(h.startswith("#") and h[1:] in p.ids for h in p.toc)  # contents → sections
    assert {"#verdict", "#leaderboard", "#gallery", "#models", "#reproduce"} <= set(p.toc)
    assert sum("sortable" in cls for cls, _ in p.tables) >= 2 and p.scripts == 1
    weights = [h for h in p.links if h.endswith("model.safetensors")]
    configs = [h for h in p.links if h.endswith("config.json")]
    assert len(weights) == len(configs) == 4  # 2 cells × 2 seeds, each file exists beside the report
    assert all((run_dir / h).is_file() for h in weights + configs)
    n_test = len(list((run_dir / "samples" / "truth").rglob("*.png")))
    assert p.cards == n_test and n_test == int(report.load(run_dir)["runs"]["n_test"].iloc[0])  # every test image
    assert p.options == 2  # a switch between the two cells


def test_report_fits_a_phone_screen(run_dir, page, tmp_path):
    """At 390 px (a phone) nothing but the tables' own wrappers scrolls sideways, measured by Chromium. Headless
    Chromium's windows are at least 500 px wide, so the report is laid out in a 390-px frame."""
    import html as _html

    exe = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if exe is None:
        pytest.skip("no chromium binary")
    _, text = page
    probe = tmp_path / "probe.html"
    probe.write_text(
        "<!DOCTYPE html><html><body style='margin:0'><iframe id='f' style='width:390px;height:3000px;border:0' "
        f"srcdoc=\"{_html.escape(text, quote=True)}\"></iframe><script>var f=document.getElementById('f');"
        "f.onload=function(){var d=f.contentDocument,o=[];d.querySelectorAll('body *').forEach(function(e){"
        "var r=e.getBoundingClientRect();if(r.right>391&&!e.closest('.scroll'))o.push(e.tagName)});"
        "document.body.setAttribute('data-width',d.documentElement.scrollWidth+' '+d.documentElement.clientWidth);"
        "document.body.setAttribute('data-wide',o.join(','))}</script></body></html>")
    dom = subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=600,3000",
                          "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    import re

    body = re.search(r"<body[^>]*>", dom).group(0)
    scroll, client = map(int, re.search(r'data-width="(\d+) (\d+)"', body).groups())
    assert scroll <= client <= 390, body[:300]
    assert 'data-wide=""' in body, body[:500]


def test_report_of_a_yaml_grid_shows_the_files_cells(tmp_path):
    cfg = tmp_path / "grid.yaml"
    cfg.write_text("grids:\n  mine:\n    description: from a file\n    cells:\n      plain_kl: {loss: kl}\n"
                   "      kl_rebal: {loss: kl, loss_params: {rebalance: true}}\n")
    out = tmp_path / "run"
    assert ablate.main(["--config", str(cfg), "--grid", "mine", "--steps", "1", "--seeds", "1", "--folds", "1",
                        "--out", str(out), "--no-progress", *TINY]) == 0
    assert (out / "config.yaml").read_bytes() == cfg.read_bytes()  # the file beside its results
    assert report.main([str(out), "--n-boot", "200"]) == 0
    md = (out / "report.md").read_text()
    conf = md.split("## Configuration")[1]
    assert '| kl_rebal | {"loss": "kl", "loss_params": {"rebalance": true}} | kl' in conf
    assert '| plain_kl | {"loss": "kl"}' in conf and "rebalance: true" in conf  # the table and the file itself
    assert "kl_rebal: {loss: kl, loss_params: {rebalance: true}}" in (out / "report.html").read_text()


def _scored_folder(root: Path, n: int = 8) -> Path:
    """A test set of synthetic photos (smooth colour gradients with a shape), none of them a training image."""
    import numpy as np
    from PIL import Image

    folder = root / "synthetic"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:48, 0:48] / 47.0
    for i in range(n):
        c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
        img = (xx[..., None] * c0 + yy[..., None] * c1) / 2
        img[10 + i:30, 12:30 + i] = rng.uniform(0, 255, 3)
        Image.fromarray(img.clip(0, 255).astype("uint8")).save(folder / f"s{i}.png")
    return folder


def test_report_has_a_verdict_per_test_set_and_the_evaluate_command(run_dir, tmp_path):
    from bench import evaluate

    out = tmp_path / "run"
    shutil.copytree(run_dir, out)
    folder = _scored_folder(tmp_path)
    assert evaluate.main([str(out), "--test", str(folder), "--no-progress"]) == 0
    assert report.main([str(out), "--n-boot", "200"]) == 0
    md = (out / "report.md").read_text()
    verdict = md.split("## Verdict")[1].split("\n## ")[0]
    assert "### Test set kodak24-bundled (the run's own)" in verdict
    assert "### Test set synthetic (re-scored by colorbench evaluate)" in verdict
    assert verdict.count("\n- Significantly better than grey") == 2  # one verdict per set
    repro = md.split("## How to reproduce")[1]
    assert "python -m bench.ablate --grid smoke" in repro
    assert f"python -m bench.evaluate {out} --test {folder}" in repro  # every command that made the folder


def test_disagreeing_test_sets_get_a_sentence():
    a = {"better_than_grey": ["l1", "mse"], "best": ("unet_vgg16", "l1")}
    b = {"better_than_grey": [], "best": ("unet_vgg16", "mse")}
    said = report.disagreement([("kodak24", a, ["..."]), ("cbsd68", b, ["..."])])
    assert said.startswith("The test sets disagree") and "on kodak24: l1, mse" in said and "on cbsd68: none" in said
    assert report.disagreement([("kodak24", a, []), ("cbsd68", dict(a), [])]) is None  # they agree
    assert report.disagreement([("kodak24", a, [])]) is None


def test_report_of_an_unfinished_grid_says_what_is_missing(run_dir, tmp_path):
    import csv

    out = tmp_path / "run"
    shutil.copytree(run_dir, out)
    with open(out / "runs.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    kept = [r for r in rows if not (r["cell"] == "kl" and r["seed"] == "1")]
    with open(out / "runs.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(kept)
    assert report.main([str(out), "--n-boot", "200"]) == 0
    md = (out / "report.md").read_text()
    assert "**Unfinished grid**: 1 of 4 planned runs are missing (cells: kl" in md
    missing = md.split("## Missing runs")[1].split("\n## ")[0]
    assert "| unet_vgg16 | kl     | 1      |" in missing or "| unet_vgg16 | kl | 1 |" in missing.replace("  ", " ")
    assert "Top-ranked cell" not in md and "Top-ranked so far (unfinished grid)" in md
    assert "Verdict (provisional: unfinished grid)" in md
    # the finished grid says nothing of the kind
    if not (run_dir / "report.md").exists():
        report.main([str(run_dir), "--n-boot", "200"])
    assert "Unfinished" not in (run_dir / "report.md").read_text()


def test_report_md_is_plain_markdown(run_dir, tmp_path):
    import re

    out = tmp_path / "<em>run & co"
    shutil.copytree(run_dir, out)
    assert report.main([str(out), "--n-boot", "200"]) == 0
    md = (out / "report.md").read_text()
    prose = re.sub(r"```.*?```", "", md, flags=re.DOTALL)
    prose = re.sub(r"`[^`]*`", "", prose)
    raw = re.search(r"(?<!\\)<[A-Za-z/!]", prose)  # a tag that is not backslash-escaped
    assert raw is None, prose[max(0, raw.start() - 40):raw.start() + 40]
    assert r"\<em\>run \& co" in md


def test_a_hostile_cell_name_from_a_yaml_file_stays_text(tmp_path):
    """A cell named like markup in a ``--config`` file is text in both files: HTML-escaped in report.html (by
    bench.reporting.document's HTML renderer, the one place that escapes), backslash-escaped in report.md (one table
    column)."""
    import re

    name = "<script>alert(1)</script>|x"
    cfg = tmp_path / "grid.yaml"
    cfg.write_text(f"grids:\n  mine:\n    cells:\n      '{name}': {{loss: mse}}\n")
    out = tmp_path / "run"
    assert ablate.main(["--config", str(cfg), "--grid", "mine", "--steps", "1", "--seeds", "1", "--folds", "1",
                        "--out", str(out), "--no-progress", *TINY]) == 0
    assert report.main([str(out), "--n-boot", "200"]) == 0
    text = (out / "report.html").read_text()
    p = Structure()
    p.feed(text)
    assert p.scripts == 1 and "<script>alert" not in text  # the inline script only
    assert text.count("&lt;script&gt;alert(1)&lt;/script&gt;|x") >= 3  # ranking, details, cells (at least)
    md = (out / "report.md").read_text()
    escaped = r"\<script\>alert(1)\</script\>\|x"
    assert md.count(escaped) >= 3
    ranking = md.split("### Ranking by")[1].split("\n\n")[1]  # the table after the heading
    widths = {len(re.split(r"(?<!\\)\|", line)) for line in ranking.splitlines()}
    assert len(widths) == 1, ranking  # "|x" did not add a column


def test_report_files_show_every_heading_and_table_of_its_document(run_dir, monkeypatch):
    """report.md and report.html are two renderings of one document: the same headings, the same table rows."""
    from helpers import same_in_both

    from bench.reporting import document

    made = []
    build = report.document
    monkeypatch.setattr(report, "document", lambda *a: made.append(build(*a)) or made[-1])
    report.write_report(run_dir, n_boot=200)
    doc = made[0]
    assert len(document.tables(doc.blocks)) >= 6 and len(document.headings(doc.blocks)) >= 10
    same_in_both(doc, (run_dir / "report.md").read_text(), (run_dir / "report.html").read_text())


@pytest.mark.parametrize("code", [errno.EACCES, errno.EROFS])
def test_report_on_a_read_only_folder_is_one_line_naming_it(run_dir, tmp_path, capsys, monkeypatch, code):
    """A folder the report cannot write into (no permission, read-only file system: simulated, the tests may run as
    root) is one line naming the folder, exit code 2; not a raw errno with a temporary file's name (issue 31)."""
    import tempfile

    from helpers import one_error

    folder = tmp_path / "ro"
    shutil.copytree(run_dir, folder)

    def refuse(*args, dir=None, **kwargs):
        raise OSError(code, os.strerror(code), str(Path(dir) / ".report.html.x1y2.tmp"))

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    rc = report.main([str(folder), "--n-boot", "20"])
    line = one_error(rc, capsys.readouterr().err, str(folder), os.strerror(code))
    assert ".tmp" not in line and "Errno" not in line, line


def _fold_rows(cells: int, seeds: int, k: int, failed: tuple = ()) -> list[dict]:
    """runs.csv rows of a k-fold grid: every (cell, seed, fold), and the two baselines (one row each)."""
    rows = [{"model": "unet_vgg16", "cell": f"c{c}", "seed": str(s), "fold": str(f), "folds": str(k), "loss": "mse",
             "status": "failed" if (c, s, f) in failed else "ok", "psnr": "22.5", "n_test": "3"}
            for c in range(cells) for s in range(seeds) for f in range(k)]
    rows += [{"model": "(none)", "cell": b, "seed": "0", "fold": "", "folds": str(k), "loss": "(none)",
              "status": "ok", "psnr": "20.0", "n_test": "12"} for b in ("grey", "mean_colour")]
    return rows


def test_run_counts_say_how_the_folds_were_merged():
    """Issue 32, item 6: after 48 k-fold trainings the report does not say '14 successful run(s)' alone."""
    import pandas as pd

    from bench.data.folds import combine_folds

    raw = pd.DataFrame(_fold_rows(12, 1, 4))
    text = report.run_counts(raw, combine_folds(raw))
    assert text == ("50 runs: 48 trainings (12 cells × 1 seed × 4 folds) and 2 baseline rows, merged over folds into "
                    "14 rows (one per model, cell and seed, baselines included): 14 successful, 0 failed.")
    raw = pd.DataFrame(_fold_rows(3, 2, 4, failed=((0, 1, 2),)))
    text = report.run_counts(raw, combine_folds(raw), missing=1)
    assert "24 trainings (3 cells × 2 seeds × 4 folds)" in text and "into 8 rows" in text
    assert text.endswith("7 successful, 1 failed, 1 missing.")  # a seed with a failed fold is one failed row
    part = raw.iloc[:-3]  # the grid is not complete yet
    assert "23 trainings (of 3 cells × 2 seeds × 4 folds)" in report.run_counts(part, combine_folds(part))


def test_run_counts_without_folds_are_plain():
    import pandas as pd

    raw = pd.DataFrame(_fold_rows(2, 2, 1)).assign(fold="", folds="")
    assert report.run_counts(raw, raw) == ("6 successful run(s) (the grey and mean-colour baseline rows included), "
                                           "0 failed.")


def test_val_curves_is_one_small_panel_per_cell_with_shared_axes(tmp_path, monkeypatch):
    import pandas as pd

    from bench.reporting import plots

    rows = [{"model": "unet_vgg16", "cell": f"cell{c}", "seed": str(s), "fold": str(f), "step": str(step),
             "val_psnr": str(20 + c + 0.1 * s + 0.05 * f + step / 100)}
            for c in range(5) for s in range(3) for f in range(2) for step in (10, 20, 30)]
    figs = []
    original = plots.save_figure
    monkeypatch.setattr(plots, "save_figure", lambda fig, path, **kw: (figs.append(fig), original(fig, path, **kw)))
    path = tmp_path / "val_psnr.png"
    assert plots.val_curves(pd.DataFrame(rows), path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    panels = [ax for ax in figs[0].axes if ax.get_visible()]
    assert [ax.get_title() for ax in panels] == [f"cell{c}" for c in range(5)]
    assert all(ax.get_shared_y_axes().joined(panels[0], ax) and ax.get_shared_x_axes().joined(panels[0], ax)
               for ax in panels)
    for ax in panels:  # 6 thin runs + the median line, and one light band
        assert len(ax.lines) == 7 and len(ax.collections) == 1
    assert not plots.val_curves(pd.DataFrame(), tmp_path / "none.png")
