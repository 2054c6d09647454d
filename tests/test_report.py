"""bench.report on a small real run: every file is written, the HTML parses and embeds its images."""
from __future__ import annotations

import base64
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch

import models
from bench import ablate, report, samples
from bench.config import preset
from bench.train import prepare

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
    assert ablate.main(["--grid", "smoke", "--steps", "2", "--seeds", "2", "--out", str(out), "--no-progress",
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
    assert len(page.imgs) == 5
    for src in page.imgs:
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
