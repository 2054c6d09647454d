"""Paired statistics of the leaderboard against hand-computed cases."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from bench import leaderboard, stats


def test_identical_cells_are_tied():
    a = np.array([20.0, 22.5, 25.0, 19.0, 30.0])
    r = stats.paired_bootstrap(a, a.copy())
    assert r["diff"] == 0 and r["lo"] == 0 and r["hi"] == 0 and r["p"] == 1.0
    assert stats.wilcoxon(a, a.copy()) == 1.0


def test_known_difference_is_significant():
    # B is A plus exactly 1 dB on every image, up to a small image-dependent wobble
    rng = np.random.default_rng(1)
    a = rng.uniform(18, 30, 24)
    b = a + 1.0 + rng.normal(0, 0.1, 24)
    r = stats.paired_bootstrap(b, a)
    assert r["n"] == 24
    assert r["diff"] == pytest.approx(np.mean(b - a))
    assert 0.9 < r["lo"] < r["diff"] < r["hi"] < 1.1
    assert r["p"] < 0.001  # no resample has a mean ≤ 0: p = 2 / (n_boot + 1)
    assert r["p"] == pytest.approx(2 / (stats.N_BOOT + 1))
    # Wilcoxon, all 24 differences positive: exact two-sided p = 2 / 2^24
    assert stats.wilcoxon(b, a) == pytest.approx(2 / 2**24)


def test_wilcoxon_hand_computed():
    # differences +1, +2, +3, -4 → ranks 1..4, W- = 4. Of the 16 sign patterns, 7 have a rank sum ≤ 4
    # ({}, {1}, {2}, {3}, {1,2}, {4}, {1,3}), so the exact two-sided p = 2 · 7/16 = 0.875
    a = np.array([11.0, 12.0, 13.0, 6.0])
    b = np.array([10.0, 10.0, 10.0, 10.0])
    assert stats.wilcoxon(a, b) == pytest.approx(0.875)
    # all six differences positive: the smallest possible two-sided p for n = 6 is 2/64
    assert stats.wilcoxon(np.arange(6) + 1.0, np.zeros(6)) == pytest.approx(2 / 64)


def test_bootstrap_ci_bounds_and_seed():
    d = np.array([1.0, 2.0, 3.0, 4.0])
    r1 = stats.paired_bootstrap(d, np.zeros(4), seed=3)
    r2 = stats.paired_bootstrap(d, np.zeros(4), seed=3)
    assert r1 == r2  # seeded: reproducible
    assert r1["diff"] == 2.5
    assert 1.0 <= r1["lo"] < 2.5 < r1["hi"] <= 4.0  # a mean of resampled values lies within their range
    assert r1["p"] < 0.001  # every resample mean is positive


def test_too_few_pairs_and_nan_pairs():
    assert math.isnan(stats.paired_bootstrap([1.0], [0.0])["p"])
    r = stats.paired_bootstrap([1.0, np.nan, 3.0, 5.0], [0.0, 0.0, np.nan, 4.0])
    assert r["n"] == 2 and r["diff"] == 1.0
    with pytest.raises(ValueError):
        stats.paired_bootstrap([1.0, 2.0], [1.0])


def test_holm_hand_computed():
    # sorted 0.01, 0.03, 0.04 → ×3, ×2, ×1 = 0.03, 0.06, 0.04 → monotone 0.03, 0.06, 0.06
    np.testing.assert_allclose(stats.holm([0.01, 0.04, 0.03]), [0.03, 0.06, 0.06])
    out = stats.holm([0.5, np.nan, 0.9])
    assert math.isnan(out[1]) and out[0] == 1.0 and out[2] == 1.0  # 0.5·2 = 1.0, then max(1.0, 0.9·1)


def test_image_means_average_seeds_then_pair_by_image():
    rows = []
    for seed, offset in ((0, 0.0), (1, 2.0)):
        for i, base in enumerate([20.0, 25.0]):
            rows.append({"model": "m", "cell": "a", "seed": seed, "image": f"im{i}.png", "psnr": base + offset})
    m = stats.image_means(pd.DataFrame(rows))
    assert m.loc["im0.png", ("m", "a")] == 21.0 and m.loc["im1.png", ("m", "a")] == 26.0


def _run_tables(cells: dict[str, np.ndarray], seeds: int = 2):
    """runs.csv and per_image.csv rows for cells with given per-image PSNR (same on every seed), plus grey."""
    runs, per_image = [], []
    for cell, psnr in cells.items():
        model = "(none)" if cell == leaderboard.GREY else "m"
        for seed in range(1 if cell == leaderboard.GREY else seeds):
            noise = 0.01 * seed  # tiny seed effect, identical on every image
            runs.append({"model": model, "cell": cell, "loss": cell, "seed": seed, "status": "ok",
                         "psnr": float(np.mean(psnr)) + noise, "ssim": 0.9, "colourfulness": 10.0,
                         "encoder_pretrained": False})
            per_image += [{"model": model, "cell": cell, "seed": seed, "image": f"im{i:02d}.png", "psnr": v + noise,
                           "ssim": 0.9, "colourfulness": 10.0} for i, v in enumerate(psnr)]
    return pd.DataFrame(runs), pd.DataFrame(per_image)


def test_leaderboard_marks_tied_and_significant_cells():
    rng = np.random.default_rng(0)
    base = rng.uniform(20, 28, 24)
    cells = {
        "best": base + 2.0,
        "same": base + 2.0,  # identical per-image PSNR to the best: must be tied
        "worse": base + 1.0 + rng.normal(0, 0.05, 24),  # 1 dB worse on every image: clearly not tied
        leaderboard.GREY: base,
    }
    runs, per_image = _run_tables(cells)
    board, failed = leaderboard.build(runs, per_image, n_boot=2000)
    assert failed.empty
    by = board.set_index("cell")
    assert leaderboard.best_cell(board) == ("m", "best")
    assert bool(by.loc["best", "tied"]) and bool(by.loc["same", "tied"])
    assert not bool(by.loc["worse", "tied"]) and not bool(by.loc["grey", "tied"])
    assert by.loc["same", "p_best"] == 1.0
    assert by.loc["worse", "p_best"] < 0.01
    assert by.loc["worse", "best_diff"] == pytest.approx(-1.0, abs=0.05)
    assert by.loc["worse", "best_hi"] < 0
    assert by.loc["best", "grey_lo"] == pytest.approx(2.0, abs=0.02) and by.loc["best", "p_grey"] < 0.01
    md = leaderboard.to_markdown(board, failed)
    assert "tied" in md and "p vs best" in md and "Holm" in md


def test_leaderboard_without_per_image_keeps_old_columns():
    runs, _ = _run_tables({"a": np.array([20.0, 21.0]), leaderboard.GREY: np.array([19.0, 19.0])})
    board, _ = leaderboard.build(runs)
    assert "p_best" not in board and "delta_grey_db" in board
    assert "p vs best" not in leaderboard.to_markdown(board, pd.DataFrame())
