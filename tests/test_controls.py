"""The known-answer control data (bench.data.controls): the generator's properties, the Bayes rows checked against the
registered losses themselves, and (slow) the controls grid recovering the known answers end to end."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.data import controls
from bench.data.abbins import ABBins
from bench.data.colour import split_lab
from bench.data.sources import ImageStore, list_images, make_splits
import losses


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return controls.write(tmp_path_factory.mktemp("controls"), "controls", seed=0)


@pytest.fixture(scope="module")
def test_u8(folder):
    return ImageStore(list_images(folder / "test"), controls.VARIANTS["controls"].size).centre_crops()


def _digest(folder):
    return hashlib.sha256(b"".join(p.read_bytes() for p in sorted(folder.rglob("*.png")))).hexdigest()


def test_the_generator_is_deterministic_and_its_splits_differ(folder, tmp_path):
    again = controls.write(tmp_path / "again", "controls", seed=0)
    assert _digest(again) == _digest(folder)
    other = controls.write(tmp_path / "other", "controls", seed=1)
    assert _digest(other) != _digest(folder)
    train = {p.read_bytes() for p in (folder / "train").glob("*.png")}
    test = {p.read_bytes() for p in (folder / "test").glob("*.png")}
    assert not train & test  # drawn from different streams of the seed


def test_flat_colours_agree_in_lightness_and_sit_on_bin_centres():
    pal = controls.Palette.make()
    lab_a, lab_b = pal.lab("a"), pal.lab("b")
    assert abs(lab_a[0] - lab_b[0]) < 0.01  # what the network sees of A and of B is the same lightness
    centres = ABBins().centres.numpy()
    for lab, want in ((lab_a, controls.AB_A), (lab_b, controls.AB_B)):
        assert np.linalg.norm(lab[1:] - want) < 1.0
        assert np.min(np.linalg.norm(centres - want, axis=1)) == 0  # a bin centre
    for (lo, hi), ab in zip(pal.textures, controls.AB_TEXTURE):
        got = controls._lab_of(np.array([lo, hi], dtype=np.uint8))
        assert np.abs(got[:, 0] - [controls.L_LOW, controls.L_HIGH]).max() < 0.5
        assert np.linalg.norm(got[:, 1:] - ab, axis=1).max() < 1.0


def test_every_image_has_its_split_of_flat_tiles(folder, test_u8):
    v, pal = controls.VARIANTS["controls"], controls.Palette.make()
    bay = controls.Bayes(controls.spec(folder))
    flat = bay.flat_mask(test_u8)[:, 0]
    is_b = (test_u8 == torch.tensor(pal.b, dtype=torch.uint8).view(1, 3, 1, 1)).all(1)
    assert (flat.sum(dim=(1, 2)) == v.flat * v.tile**2).all()
    assert (is_b.sum(dim=(1, 2)) == v.b_tiles[0] * v.tile**2).all()
    L = split_lab(test_u8)[0][:, 0]
    assert float((L[flat] - controls.L_FLAT).abs().max()) < 0.5  # one lightness on every flat pixel


def test_the_varying_variant_alternates_the_share_of_b(tmp_path):
    folder = controls.write(tmp_path, "controls-varying")
    u8 = ImageStore(list_images(folder / "test"), 32).centre_crops()
    pal = controls.Palette.make()
    n_b = (u8 == torch.tensor(pal.b, dtype=torch.uint8).view(1, 3, 1, 1)).all(1).sum(dim=(1, 2)) // 64
    assert n_b[:4].tolist() == [0, 6, 0, 6] and controls.spec(folder)["b_share"] == pytest.approx(0.3)


def _expected_loss(name: str, const: torch.Tensor, bay: controls.Bayes) -> float:
    """The registered loss of a constant prediction on a flat region of A and B pixels at the generator's split."""
    n = 100
    n_b = round(n * bay.share)
    target = torch.cat([bay.lab_a[1:].float().repeat(n - n_b, 1), bay.lab_b[1:].float().repeat(n_b, 1)])
    target = target.T.reshape(1, 2, 1, n)
    return float(losses.build(name)(const.float().view(1, 2, 1, 1).expand_as(target), target))


@pytest.mark.parametrize("name", ["mse", "l1", "huber"])
def test_each_pixel_loss_is_smallest_at_its_bayes_row(folder, name):
    bay = controls.Bayes(controls.spec(folder))
    best = bay.flat_ab(f"bayes:{name}")
    at_best = _expected_loss(name, best, bay)
    for da in (-1.0, 0.0, 1.0):
        for db in (-1.0, 0.0, 1.0):
            if da or db:
                assert _expected_loss(name, best + torch.tensor([da, db]), bay) >= at_best - 1e-7


def test_the_kl_bayes_distribution_is_the_mixture_and_decodes_between_mean_and_mode(folder):
    bay = controls.Bayes(controls.spec(folder))
    p = bay._mixture()
    target = torch.cat([bay.lab_a[1:].float().repeat(70, 1), bay.lab_b[1:].float().repeat(30, 1)]).T.reshape(1, 2, 1, 100)
    kl = losses.build("kl")

    def loss_of(logits):
        return float(kl(logits.view(1, -1, 1, 1).expand(1, -1, 1, 100), target))

    best = loss_of(torch.log(p.clamp_min(1e-30)))
    g = torch.Generator().manual_seed(0)
    for _ in range(5):  # any other distribution has a larger expected KL
        assert loss_of(torch.log(p.clamp_min(1e-30)) + 0.3 * torch.randn(len(p), generator=g)) > best
    A, B = bay.lab_a[1:].float(), bay.lab_b[1:].float()
    t = float(torch.dot(bay.flat_ab("bayes:kl") - A, B - A) / torch.dot(B - A, B - A))
    assert 0 < t < bay.share  # the annealed mean lies between the mode (A) and the mean (share of B)
    torch.testing.assert_close(bay.flat_ab("bayes:kl_mode"), torch.tensor(controls.AB_A))
    assert torch.allclose(bay.flat_ab("bayes:kl_T1"), bay.flat_ab("bayes:mse"), atol=0.5)


def test_bayes_rows_order_the_losses_as_the_issue_expects(folder, test_u8):
    from bench.data.colour import merge_lab
    from bench.metrics.compute import colourfulness, psnr_per_image

    bay = controls.Bayes(controls.spec(folder))
    target = test_u8.float() / 255.0
    L = split_lab(test_u8)[0]
    psnr, cf = {}, {}
    for row in ("bayes:mse", "bayes:kl", "bayes:l1"):
        pred = merge_lab(L, bay.predict_ab(row, test_u8))
        psnr[row], cf[row] = float(psnr_per_image(pred, target).mean()), float(colourfulness(pred).mean())
    assert psnr["bayes:mse"] > psnr["bayes:kl"] + 0.3 > psnr["bayes:l1"] + 0.6
    assert cf["bayes:mse"] < cf["bayes:kl"] < cf["bayes:l1"]


def test_data_controls_is_generated_into_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("COLORBENCH_CACHE", str(tmp_path))
    splits = make_splits("controls")
    assert splits.names == {"train": "controls", "val": "controls", "test": "controls-test"}
    assert len(splits.train) == 360 and len(splits.val) == 40 and len(splits.test) == 48
    assert controls.spec(splits.roots["test"])["variant"]["name"] == "controls"
    assert controls.split_of("controls-varying-test") == ("controls-varying", "test")
    assert controls.split_of("kodak24") is None


def test_processes_that_generate_the_controls_together_get_one_complete_folder(tmp_path):
    """Workers started at once on --data controls: each returns a complete folder, none sees a half-written one."""
    code = ("import sys, hashlib; from pathlib import Path; from bench.data import controls; f = controls.ensure('controls');"
            "print(f, hashlib.sha256(b''.join(p.read_bytes() for p in sorted(Path(f).rglob('*.png')))).hexdigest())")
    env = {**os.environ, "COLORBENCH_CACHE": str(tmp_path)}
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
             for _ in range(3)]
    outs = {p.communicate(timeout=120)[0] for p in procs}
    assert all(p.returncode == 0 for p in procs) and len(outs) == 1
    folder = Path(outs.pop().split()[0])
    assert [p.name for p in tmp_path.iterdir()] == [folder.name]  # the losers' copies are gone
    assert controls.spec(folder)["variant"]["name"] == "controls"


@pytest.mark.slow
def test_the_controls_grid_recovers_the_known_answers(tmp_path, monkeypatch, capsys):
    """The guard of the harness: the controls grid's mse, its negative control, l1 and kl (3 seeds each, the
    controls preset; huber and kl_rebal are left out to keep CI short) must recover the known answers: every cell
    ≥ 1 dB above the mean colour, PSNR mse > kl > l1 and colourfulness the reverse, each cell within 0.5 dB of its
    loss's Bayes row, and the two mse cells not different."""
    from bench import ablate
    from bench.config import grids
    from bench.reporting import leaderboard

    full = grids.get("controls")
    cells = [c for c in full.cells if c.name in ("mse", "mse_again", "l1", "kl")]
    monkeypatch.setitem(grids.GRIDS, "controls-ci", grids.Grid("controls-ci", full.description, tuple(cells),
                                                               full.defaults))
    monkeypatch.setenv("COLORBENCH_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run"
    assert ablate.main(["--grid", "controls-ci", "--out", str(out), "--device", "cpu", "--no-progress"]) == 0
    board, _ = leaderboard.build(leaderboard.load_runs(out), leaderboard.load_per_image(out), n_boot=2000)
    by = board.set_index("cell")
    trained = [c.name for c in cells]
    assert (by.loc[trained, "n"] == 3).all()
    assert by.loc[trained, "better_than_mean_colour"].all()
    assert (by.loc[trained, "mean_colour_diff"] >= 1.0).all(), by.loc[trained, "mean_colour_diff"]
    answers = board.attrs["known_answers"]
    near = answers["near"]
    assert set(near.loc[near["decoding"] == "psnr", "cell"]) == set(trained)
    assert near.loc[near["decoding"] == "psnr", "near"].all(), near
    orders = answers["orderings"].set_index(["metric", "a", "b"])
    for metric, a, b in (("psnr", "mse", "kl"), ("psnr", "kl", "l1"), ("psnr", "mse", "l1"),
                         ("colourfulness", "l1", "kl"), ("colourfulness", "kl", "mse")):
        row = orders.loc[(metric, a, b)]
        assert row["expect"] == ">" and row["recovered"], (metric, a, b, row.to_dict())
    negative = [k for k in orders.index if k[0] == "psnr" and {k[1], k[2]} == {"mse", "mse_again"}]
    assert len(negative) == 1 and orders.loc[negative[0], "expect"] == "="
    assert orders.loc[negative[0], "recovered"]  # the negative control: its interval covers 0
    text = capsys.readouterr().out
    assert "Known answers (control data): 4 of 4 trained cells are within 0.5 dB" in text
    assert "Known orderings:" in text and "missed" not in text


def _known_tables(l1_offset: float = 0.05, n: int = 30, seed: int = 0):
    """runs and per-image rows of a known-answer board: Bayes rows for mse and l1, cells near them (l1 shifted by
    ``l1_offset`` dB), mse twice with other seeds."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    base = rng.uniform(19, 23, n)
    bayes = {"bayes:mse": (base, 80.0), "bayes:l1": (base - 1.4, 95.0)}
    cells = {"mse": ("mse", 0, base - 0.1, 80.5), "mse_again": ("mse", 100, base - 0.1, 80.5),
             "l1": ("l1", 0, base - 1.4 + l1_offset, 94.0)}
    runs, per_image = [], []

    def add(model, cell, loss, seed_, psnr, cf):
        runs.append({"model": model, "cell": cell, "loss": loss, "loss_params": "{}", "seed": seed_, "status": "ok",
                     "psnr": float(psnr.mean()), "colourfulness": cf, "encoder_pretrained": False})
        per_image.extend({"model": model, "cell": cell, "seed": seed_, "image": f"im{i:02d}.png", "psnr": v,
                          "colourfulness": cf + rng.normal(0, 0.3)} for i, v in enumerate(psnr))

    for cell, (psnr, cf) in bayes.items():
        add("(none)", cell, "(none)", 0, psnr, cf)
    for cell, (loss, first, psnr, cf) in cells.items():
        for s in range(3):
            add("m", cell, loss, first + s, psnr + rng.normal(0, 0.03, n) + rng.normal(0, 0.01), cf)
    return pd.DataFrame(runs), pd.DataFrame(per_image)


def test_known_answers_are_checked_against_the_bayes_rows():
    from bench.reporting import leaderboard

    board, _ = leaderboard.build(*_known_tables(), n_boot=500)
    answers = board.attrs["known_answers"]
    near = answers["near"].set_index("cell")
    assert near["near"].all() and near.loc["mse", "bayes_row"] == "bayes:mse"
    assert near.loc["mse", "diff"] == pytest.approx(-0.1, abs=0.05)
    orders = answers["orderings"].set_index(["metric", "a", "b"])
    assert orders.loc[("psnr", "mse", "l1"), "expect"] == ">" and orders.loc[("psnr", "mse", "l1"), "recovered"]
    assert orders.loc[("colourfulness", "l1", "mse"), "recovered"]
    same = [k for k in orders.index if k[0] == "psnr" and {k[1], k[2]} == {"mse", "mse_again"}]
    assert orders.loc[same[0], "expect"] == "=" and orders.loc[same[0], "recovered"]
    assert pd_isna_rank(board, "bayes:mse")  # reference rows are never ranked
    lines = leaderboard.verdict_lines(board)
    assert any(s.startswith("Known answers (control data): 3 of 3") for s in lines)
    assert "## Known answers (control data)" in leaderboard.to_markdown(board, _)


def test_a_cell_far_from_its_bayes_row_is_named():
    from bench.reporting import leaderboard

    board, _ = leaderboard.build(*_known_tables(l1_offset=-2.0), n_boot=300)
    lines = leaderboard.verdict_lines(board)
    assert any(s.startswith("Known answers (control data): 2 of 3") and "not: l1 (-2.0" in s for s in lines)


def pd_isna_rank(board, cell) -> bool:
    import pandas as pd

    return bool(pd.isna(board.set_index("cell").loc[cell, "rank"]))
