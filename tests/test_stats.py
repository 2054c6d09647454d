"""Paired statistics: hand-computed cases, brute force, calibration by simulation, and verdicts on tables whose
truth is known."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest

from bench.metrics import stats
from bench.reporting import leaderboard

ALPHA = 0.05


def brute_force_p(d) -> float:
    """Conservative two-sided sign-flip p by enumerating every sign pattern in Python (independent reference)."""
    d = list(d)
    obs = abs(sum(d))
    pats = list(itertools.product((1, -1), repeat=len(d)))
    return sum(abs(sum(s * x for s, x in zip(p, d))) >= obs - 1e-12 for p in pats) / len(pats)


# ----------------------------------------------------------------------------------------------- the test


@pytest.mark.parametrize("d", [[1.0, 2.0, 3.0, -4.0], [0.5, -0.2, 1.3, 0.7, -0.1, 2.2], [1.0, 1.0, -1.0, 2.0, 0.0],
                               list(np.random.default_rng(3).normal(0.3, 1, 11))])
def test_exact_sign_flip_matches_brute_force(d):
    r = stats.sign_flip_pvalues(np.array(d))
    assert r["exact"]
    assert r["p_conservative"] == pytest.approx(brute_force_p(d))
    # the randomised p lies inside the tie: (gt, gt + eq] / 2^n, never above the conservative p
    assert 0 < r["p"] <= r["p_conservative"]
    assert r["p"] == stats.sign_flip_pvalues(np.array(d))["p"]  # reproducible


def test_hand_computed_sign_flip():
    # d = 1, 2, 3, -4: Σ = 2. Of the 16 sign patterns only ±(1 - 2 - 3 + 4) give
    # |Σ| = 0 < 2; the other 14 reach 2 or more → p = 14/16
    assert stats.sign_flip_pvalues(np.array([1.0, 2.0, 3.0, -4.0]))["p_conservative"] == pytest.approx(14 / 16)
    # six positive differences: only the observed pattern and its mirror are as extreme → 2/64
    r = stats.sign_flip_test(np.arange(6) + 11.0, np.full(6, 10.0))
    assert r["p_conservative"] == pytest.approx(2 / 64) and r["p"] < 2 / 64
    assert r["diff"] == pytest.approx(3.5) and r["n"] == 6


def test_identical_and_degenerate_inputs():
    a = np.array([20.0, 22.5, 25.0, 19.0, 30.0])
    r = stats.sign_flip_test(a, a.copy())
    assert r["diff"] == 0 and r["p"] == 1.0 and r["p_conservative"] == 1.0
    assert math.isnan(stats.sign_flip_test([1.0], [0.0])["p"])
    r = stats.sign_flip_test([1.0, np.nan, 3.0, 5.0], [0.0, 0.0, np.nan, 4.0])  # unpaired images dropped
    assert r["n"] == 2 and r["diff"] == 1.0
    with pytest.raises(ValueError):
        stats.sign_flip_test([1.0, 2.0], [1.0])


def test_monte_carlo_mode_detects_a_clear_difference():
    rng = np.random.default_rng(1)
    a = rng.uniform(18, 30, 24)
    b = a + 1.0 + rng.normal(0, 0.1, 24)
    r = stats.sign_flip_test(b, a)
    assert not r["exact"] and r["n"] == 24
    # every random flip gives a smaller |Σ|: only the observed one counts, p = 1 / (N_PERM + 1)
    assert r["p_conservative"] == pytest.approx(1 / (stats.N_PERM + 1))
    assert r["p"] <= r["p_conservative"]


def _null_differences(n: int, sims: int, rng) -> np.ndarray:
    """Per-image differences of two equally good trained cells (3 seeds each, averaged): an image × cell
    interaction and per-run noise, half of the simulations with heavy tails (t, 3 df) and unequal image spreads.
    No seed offset common to all images: that would be a real difference between these trained networks (the
    two-level interval is the tool for seed variation)."""
    def cell():
        inter = rng.normal(0, 0.6, (sims, n))
        inter[: sims // 2] = rng.standard_t(3, (sims // 2, n)) * rng.uniform(0.2, 1.5, (sims // 2, n))
        return inter + rng.normal(0, 0.2, (sims, 3, n)).mean(axis=1)
    return cell() - cell()


@pytest.mark.parametrize("n", [6, 24, 100])
def test_sign_flip_test_is_calibrated(n):
    """2,000 seeded simulations with no true difference: rejections at α = 0.05 within [3.5 %, 6.5 %]."""
    d = _null_differences(n, 2000, np.random.default_rng(1000 + n))
    r = stats.sign_flip_pvalues(d, seed=n)
    rate = float((r["p"] <= ALPHA).mean())
    assert 0.035 <= rate <= 0.065, rate
    if n == 6:  # why the randomised p: the conservative exact p can only reject 1/32 of the time at n = 6
        assert float((r["p_conservative"] <= ALPHA).mean()) == pytest.approx(1 / 32, abs=0.012)


def test_holm_hand_computed():
    # sorted 0.01, 0.03, 0.04 → ×3, ×2, ×1 = 0.03, 0.06, 0.04 → monotone 0.03, 0.06, 0.06
    np.testing.assert_allclose(stats.holm([0.01, 0.04, 0.03]), [0.03, 0.06, 0.06])
    out = stats.holm([0.5, np.nan, 0.9])
    assert math.isnan(out[1]) and out[0] == 1.0 and out[2] == 1.0  # 0.5·2 = 1.0, then max(1.0, 0.9·1)


@pytest.mark.parametrize("n", [6, 24])
def test_holm_families_keep_the_family_wise_error(n):
    """Five trained cells and grey, all equal in truth, 2,000 simulations: the chance of any "better/worse than
    grey" (Holm over 5) and of any "worse than the best" (Holm over all 10 pairs, as ``compare_cells`` does) stays
    at or below 5 %. Comparing only with the best picked from the same data (Holm over 4) would not: it is shown
    to reject far more often."""
    rng = np.random.default_rng(70 + n)
    sims, cells = 2000, 5
    x = rng.normal(0, 0.5, (sims, cells, n)) + rng.normal(0, 0.2, (sims, cells, 2, n)).mean(axis=2)
    pairs = list(itertools.combinations(range(cells), 2))
    p_grey = stats.sign_flip_pvalues(x.reshape(-1, n), n_perm=2000, seed=1)["p"].reshape(sims, cells)
    d_pairs = np.stack([x[:, i] - x[:, j] for i, j in pairs], axis=1)
    p_pairs = stats.sign_flip_pvalues(d_pairs.reshape(-1, n), n_perm=2000, seed=2)["p"].reshape(sims, len(pairs))
    best = x.mean(axis=2).argmax(axis=1)
    grey_fw = best_fw = naive_fw = 0
    for s in range(sims):
        grey_fw += bool((stats.holm(p_grey[s]) < ALPHA).any())
        adj = stats.holm(p_pairs[s])
        best_fw += any(adj[k] < ALPHA for k, (i, j) in enumerate(pairs) if best[s] in (i, j))
        naive = [p_pairs[s][k] for k, (i, j) in enumerate(pairs) if best[s] in (i, j)]
        naive_fw += bool((stats.holm(naive) < ALPHA).any())
    assert grey_fw / sims <= 0.065 and best_fw / sims <= 0.065, (grey_fw / sims, best_fw / sims)
    assert naive_fw / sims > best_fw / sims


# ----------------------------------------------------------------------------------------------- two levels


def _coverage(n, k, sims, seed_sd, rng, k_other=1):
    hit = 0
    for s in range(sims):
        img = rng.normal(22, 3, n)

        def cell(kk, delta):
            return img + delta + rng.normal(0, 0.5, n) + rng.normal(0, seed_sd, (kk, 1)) + rng.normal(0, 0.2, (kk, n))
        a = cell(k, 0.5)
        b = cell(k_other, 0.0) if k_other > 1 else img[None, :]
        r = stats.hierarchical_ci(a, b, n_boot=500, seed=s)
        hit += r["lo"] <= 0.5 <= r["hi"]  # the true difference of the losses (expected over images and seeds)
    return hit / sims


def test_hierarchical_ci_basic_properties():
    xa = np.array([[21.0, 23.0, 25.0, 20.0], [21.5, 23.5, 25.5, 20.5]])  # two seeds, 0.5 dB apart everywhere
    xb = np.array([[20.0, 22.0, 24.0, 19.0]])
    r = stats.hierarchical_ci(xa, xb, n_boot=2000, seed=1)
    assert r["diff"] == pytest.approx(1.25) and (r["n_images"], r["seeds_a"], r["seeds_b"]) == (4, 2, 1)
    assert r["lo"] < 1.25 < r["hi"]
    assert r == stats.hierarchical_ci(xa, xb, n_boot=2000, seed=1)  # seeded
    # one seed each and a constant difference: no spread at all
    c = stats.hierarchical_ci(xb + 1.0, xb, n_boot=500)
    assert c["lo"] == pytest.approx(1.0) and c["hi"] == pytest.approx(1.0)
    # seeds with a missing image are dropped, images missing everywhere too
    xa2 = np.vstack([xa, [np.nan, 1, 1, 1]])
    assert stats.hierarchical_ci(xa2, xb, n_boot=200)["seeds_a"] == 2


@pytest.mark.parametrize("n,k,seed_sd,k_other,low", [(24, 1, 0.0, 1, 0.91), (24, 5, 0.3, 1, 0.90),
                                                     (24, 3, 0.3, 3, 0.88), (6, 3, 0.3, 1, 0.85)])
def test_hierarchical_ci_coverage(n, k, seed_sd, k_other, low):
    """Coverage of the true loss difference by the 95 % two-level interval (measured values are in results/stats-calibration.md)."""
    cov = _coverage(n, k, 300, seed_sd, np.random.default_rng(n * 100 + k), k_other)
    assert low <= cov <= 0.99, cov


# ----------------------------------------------------------------------------------------------- power


@pytest.mark.parametrize("n", [6, 9, 24])
def test_min_detectable_difference_has_the_stated_power(n):
    mde = stats.min_detectable_difference(1.0, n)
    d = np.random.default_rng(n + 50).normal(mde, 1.0, (2000, n))
    power = float((stats.sign_flip_pvalues(d, n_perm=2000, seed=3)["p_conservative"] <= ALPHA).mean())
    assert 0.76 <= power <= 0.84, power
    assert stats.min_detectable_difference(2.0, n) == pytest.approx(2 * mde)


def test_min_detectable_difference_edge_cases():
    assert math.isinf(stats.min_detectable_difference(1.0, 4))  # smallest two-sided p at n = 4 is 1/8
    assert math.isnan(stats.min_detectable_difference(1.0, 1))
    # large n: the normal-theory value (z_0.975 + z_0.8) / √n
    assert stats.min_detectable_difference(1.0, 400) == pytest.approx((1.959964 + 0.841621) / 20, rel=0.01)


# ----------------------------------------------------------------------------------------------- tables, verdicts


def test_image_means_average_seeds_then_pair_by_image():
    rows = []
    for seed, offset in ((0, 0.0), (1, 2.0)):
        for i, base in enumerate([20.0, 25.0]):
            rows.append({"model": "m", "cell": "a", "seed": seed, "image": f"im{i}.png", "psnr": base + offset})
    m = stats.image_means(pd.DataFrame(rows))
    assert m.loc["im0.png", ("m", "a")] == 21.0 and m.loc["im1.png", ("m", "a")] == 26.0


def _tables(cells: dict[str, np.ndarray], metric: str = "psnr", ref_other: dict | None = None):
    """runs.csv and per_image.csv rows from ``seeds × images`` arrays per cell (1-D: one seed); grey's model is
    ``(none)`` as in real runs. ``ref_other`` adds ``<metric>_ref_other`` tables for reference-based cells."""
    runs, per_image = [], []
    for cell, x in cells.items():
        x = np.atleast_2d(x)
        model = "(none)" if cell in leaderboard.BASELINES else "m"
        for seed, row in enumerate(x):
            r = {"model": model, "cell": cell, "loss": cell, "seed": seed, "status": "ok", metric: float(row.mean()),
                 "psnr": float(row.mean()), "ssim": 0.9, "colourfulness": 10.0, "encoder_pretrained": False}
            pis = [{"model": model, "cell": cell, "seed": seed, "image": f"im{i:03d}.png", metric: v, "psnr": v,
                    "ssim": 0.9, "colourfulness": 10.0} for i, v in enumerate(row)]
            if ref_other and cell in ref_other:
                other = np.atleast_2d(ref_other[cell])[seed]
                r[f"{metric}_ref_other"] = float(other.mean())
                for p, v in zip(pis, other):
                    p[f"{metric}_ref_other"] = v
            runs.append(r)
            per_image += pis
    return pd.DataFrame(runs), pd.DataFrame(per_image)


def _known_truth(n=30, seeds=3, seed=0):
    rng = np.random.default_rng(seed)
    img = rng.uniform(18, 28, n)

    def cell(delta, noise=0.3):
        return img + delta + rng.normal(0, noise, n) + rng.normal(0, 0.05, (seeds, 1)) + rng.normal(0, 0.05, (seeds, n))
    return {"top": cell(2.0), "twin": cell(2.0), "middle": cell(1.0), "bad": cell(-1.5), "flat": cell(0.0),
            leaderboard.GREY: img}


def test_verdict_is_true_for_a_table_with_known_truth():
    runs, per_image = _tables(_known_truth())
    board, failed = leaderboard.build(runs, per_image, n_boot=1000)
    v = leaderboard.verdict(board)
    assert v["best"][1] in ("top", "twin")
    assert sorted(v["better_than_grey"]) == ["middle", "top", "twin"]
    assert v["worse_than_grey"] == ["bad"]
    assert sorted(v["worse_than_best"]) == ["bad", "flat", "middle"]  # "twin" is n.s.
    assert v["stronger"] == "grey" and v["two_level"] and sorted(v["above_baseline_two_level"]) == ["middle", "top", "twin"]
    assert not v["nothing"] and v["warning"] is None and v["n_images"] == 30 and v["seeds"] == (3, 3)
    by = board.set_index("cell")
    other = "twin" if v["best"][1] == "top" else "top"
    assert by.loc[other, "verdict"] == "> grey; n.s. vs best" and by.loc["bad", "verdict"] == "< grey, best"
    assert by.loc["grey", "verdict"] == "baseline" and pd.isna(by.loc["grey", "rank"])
    assert sorted(by["rank"].dropna().astype(int)) == [1, 2, 3, 4, 5]  # trained cells only
    # the minimum detectable difference printed is the formula applied to this run's own spread and size
    sd = float(board.loc[board["cell"] != "grey", "grey_sd"].median())
    assert v["mde_grey"] == pytest.approx(stats.min_detectable_difference(sd, 30))
    assert f"{v['mde_grey']:.2f} dB to grey" in " ".join(v["lines"])
    # the interval columns really are the cell − grey mean difference of the seed means
    top = np.atleast_2d(_known_truth()["middle"]).mean(axis=0) - _known_truth()[leaderboard.GREY]
    assert by.loc["middle", "grey_diff"] == pytest.approx(top.mean())
    assert by.loc["middle", "grey_lo"] < top.mean() < by.loc["middle", "grey_hi"]


def test_verdict_says_when_nothing_can_be_concluded():
    rng = np.random.default_rng(5)
    img = rng.uniform(18, 28, 6)
    cells = {c: img + rng.normal(0, 1.0, 6) + rng.normal(0, 0.2, (2, 6)) for c in ("a", "b", "c")}
    cells[leaderboard.GREY] = img
    runs, per_image = _tables(cells)
    board, failed = leaderboard.build(runs, per_image, n_boot=500)
    v = leaderboard.verdict(board)
    assert v["nothing"] and not v["better_than_grey"] and not v["worse_than_best"]
    assert v["warning"] and "only 6 test images" in v["warning"]
    last = v["lines"][-1]
    assert last.startswith("Nothing can be concluded from this run: with 6 test images and 2 seed(s), differences "
                           "below ") and f"{v['mde_grey']:.2f} dB to grey" in last
    md = leaderboard.to_markdown(board, failed)
    assert "## Verdict" in md and "Nothing can be concluded" in md and "tied" not in md and "n.s." in md
    term = leaderboard.to_terminal(board, failed)
    assert "Nothing can be concluded" in term and "Warning: only 6 test images" in term


def test_lower_is_better_metric_ranks_and_decides_the_other_way():
    truth = _known_truth(seed=2)
    # a distance-like metric: the negative PSNR shifted to positive values (lower = better)
    lp = {c: 40.0 - x for c, x in truth.items()}
    runs, per_image = _tables(lp, metric="lpips")
    assert not stats.metric("lpips").higher_is_better
    board, _ = leaderboard.build(runs, per_image, n_boot=500, metric="lpips")
    auto = board[board["group"] == "automatic"]
    assert list(auto["score"]) == sorted(auto["score"])  # ascending: best first
    v = leaderboard.verdict(board, "lpips")
    assert sorted(v["better_than_grey"]) == ["middle", "top", "twin"] and v["worse_than_grey"] == ["bad"]
    assert sorted(v["worse_than_best"]) == ["bad", "flat", "middle"]
    assert "lower is better" in leaderboard.to_terminal(board, metric="lpips")


def test_reference_models_get_their_own_table_ranked_on_the_other_photo_score():
    truth = _known_truth(seed=3)
    cells = {k: truth[k] for k in ("top", "middle", leaderboard.GREY)}
    # a reference model: near-perfect with its own photo as reference (an oracle), mediocre with another photo
    cells["adain"] = truth["top"] + 10.0
    runs, per_image = _tables(cells, ref_other={"adain": truth["flat"]})
    board, failed = leaderboard.build(runs, per_image, n_boot=500)
    auto, ref = board[board["group"] == "automatic"], board[board["group"] == "reference"]
    assert "adain" not in set(auto["cell"]) and list(ref["cell"]) == ["adain"]
    assert list(auto["rank"].iloc[:2]) == [1, 2] and pd.isna(auto["rank"].iloc[2]) and list(ref["rank"]) == [1]
    r = ref.iloc[0]
    assert r["rank_by"] == "psnr_ref_other" and r["score"] == pytest.approx(truth["flat"].mean())
    assert r["psnr_mean"] == pytest.approx(cells["adain"].mean())  # shown as the upper bound only
    assert not r["better_than_grey"]  # other-photo score ≈ grey: no oracle advantage
    assert leaderboard.best_cell(board) == ("m", "top")
    md = leaderboard.to_markdown(board, failed)
    assert "## Reference-based colorizers" in md and "upper bound" in md


def test_terminal_leaderboard_fits_100_columns():
    truth = _known_truth(seed=4)
    cells = {("a_very_long_cell_name_" + str(i) + "+10*adain_style_concat_refother"): truth["top"] + 0.1 * i
             for i in range(4)}
    cells[leaderboard.GREY] = truth[leaderboard.GREY]
    runs, per_image = _tables(cells)
    board, failed = leaderboard.build(runs, per_image, n_boot=200)
    text = leaderboard.to_terminal(board, failed)
    assert max(len(line) for line in text.splitlines()) <= 100
    assert "…" in text  # names cut, not the numbers


def test_leaderboard_without_per_image_has_no_tests():
    runs, _ = _tables({"a": np.array([[20.0, 21.0]]), leaderboard.GREY: np.array([19.0, 19.0])})
    board, _ = leaderboard.build(runs)
    assert "p_best" not in board and "delta_grey" in board
    md = leaderboard.to_markdown(board, pd.DataFrame())
    assert "p vs best" not in md and "Verdict" not in md
    assert leaderboard.verdict(board) == {}


def test_one_trained_cell_and_grey():
    truth = _known_truth(seed=6)
    runs, per_image = _tables({"top": truth["top"], leaderboard.GREY: truth[leaderboard.GREY]})
    board, failed = leaderboard.build(runs, per_image, n_boot=200)
    assert board["best_diff"].isna().all() and bool(board.set_index("cell").loc["top", "better_than_grey"])
    assert "| top " in leaderboard.to_markdown(board, failed)
    v = leaderboard.verdict(board)
    assert v["better_than_grey"] == ["top"] and not any("worse than the best" in s for s in v["lines"])


def test_a_grid_of_reference_models_only_gets_a_verdict_on_the_other_photo_score():
    truth = _known_truth(seed=8)
    cells = {"ref_good": truth["top"] + 5.0, "ref_flat": truth["top"] + 5.0, leaderboard.GREY: truth[leaderboard.GREY]}
    runs, per_image = _tables(cells, ref_other={"ref_good": truth["middle"], "ref_flat": truth["flat"]})
    board, failed = leaderboard.build(runs, per_image, n_boot=300)
    v = leaderboard.verdict(board)
    assert v["group"] == "reference" and v["best"] == ("m", "ref_good")
    assert v["better_than_grey"] == ["ref_good"] and v["worse_than_best"] == ["ref_flat"]
    lines = leaderboard.verdict_lines(board)
    assert lines[0].startswith("Reference-based colorizers") and "## Verdict" in leaderboard.to_markdown(board, failed)


# ----------------------------------------------------------------------------------------------- the mean colour


def _tint_truth(n=30, seeds=3, seed=11):
    """Known truth with both baselines: the mean colour is 1.5 above grey on every image; ``tint`` is a network
    that learned only that tint, ``beyond`` one that is 1 above it, ``grey_net`` one that learned nothing."""
    rng = np.random.default_rng(seed)
    img = rng.uniform(18, 28, n)
    tint = img + 1.5 + rng.normal(0, 0.3, n)

    def cell(base, delta):
        return base + delta + rng.normal(0, 0.3, n) + rng.normal(0, 0.05, (seeds, 1)) + rng.normal(0, 0.05, (seeds, n))
    return {"beyond": cell(tint, 1.0), "tint": cell(tint, 0.0), "grey_net": cell(img, 0.0),
            leaderboard.GREY: img, leaderboard.MEAN_COLOUR: tint}


def test_verdict_names_the_cells_beyond_the_mean_colour_and_never_ranks_the_baselines():
    runs, per_image = _tables(_tint_truth())
    board, failed = leaderboard.build(runs, per_image, n_boot=500)
    v = leaderboard.verdict(board)
    assert v["stronger"] == leaderboard.MEAN_COLOUR and v["better_than_stronger"] == ["beyond"]
    assert sorted(v["better_than_grey"]) == ["beyond", "tint"]
    assert v["better_than_mean_colour"] == ["beyond"] and v["worse_than_mean_colour"] == ["grey_net"]
    # beating the mean colour shows a tint at least, not colours: without the spatial figure or the oracle tint the
    # verdict does not say "colours beyond a global tint"
    assert v["beyond_tint"] == []
    assert any(s.startswith("Significantly better than the stronger baseline") and s.endswith(": beyond.")
               for s in v["lines"])
    assert any(s.startswith("Whether they learned colours or a tint per image is not known") for s in v["lines"])
    by = board.set_index("cell")
    assert v["best"] == ("m", "beyond") and by.loc["beyond", "rank"] == 1
    assert by[["rank"]].loc[list(leaderboard.BASELINES)].isna().all().all()  # baselines: shown, never ranked
    assert by.loc["tint", "verdict"] == "> grey; n.s. vs mean; < best"
    # the mean colour's own row compares it with grey (one test, outside the trained cells' families)
    assert by.loc[leaderboard.MEAN_COLOUR, "p_grey"] < 0.05 and by.loc[leaderboard.MEAN_COLOUR, "verdict"] == "baseline"
    term = leaderboard.to_terminal(board, failed)
    assert "mean_colour" in term and "grey" in term and "Δmean" in term
    assert max(len(line) for line in term.splitlines()) <= 100
    # each cell's own minimum detectable difference is a column
    assert by.loc["tint", "mde_mean_colour"] == pytest.approx(
        stats.min_detectable_difference(by.loc["tint", "mean_colour_sd"], 30))


def _with_spatial(per_image, r_of: dict, seed=0):
    """The per-image rows with a ``spatial_colour`` column: values around ``r_of[cell]`` (0 for the others)."""
    rng = np.random.default_rng(seed)
    per_image = per_image.copy()
    per_image["spatial_colour"] = [r_of.get(c, 0.0) + rng.normal(0, 0.05) for c in per_image["cell"]]
    return per_image


@pytest.mark.parametrize("r_beyond, says_colours", [(0.2, True), (0.0, False)])
def test_colours_beyond_a_tint_need_a_spatial_colour_above_zero(r_beyond, says_colours):
    runs, per_image = _tables(_tint_truth())
    board, _ = leaderboard.build(runs, _with_spatial(per_image, {"beyond": r_beyond}), n_boot=300)
    v = leaderboard.verdict(board)
    assert v["better_than_stronger"] == ["beyond"]  # above the mean colour either way
    by = board.set_index("cell")
    assert bool(by.loc["beyond", "spatial_above_zero"]) is says_colours
    assert not by.loc["tint", "spatial_above_zero"] and pd.isna(by.loc[leaderboard.GREY, "p_spatial"])
    assert v["beyond_tint"] == (["beyond"] if says_colours else [])
    if says_colours:
        assert any(s.startswith("Learned colours beyond a global tint: beyond") for s in v["lines"])
    else:
        assert any(s.startswith("None of them shows colours beyond a tint") for s in v["lines"])


def test_a_cell_above_the_oracle_tint_learned_colours():
    truth = _tint_truth(seed=13)
    truth[leaderboard.ORACLE_TINT] = truth[leaderboard.MEAN_COLOUR] + 0.5  # a tint per image beats the global one
    runs, per_image = _tables(truth)
    runs.loc[runs["cell"] == leaderboard.ORACLE_TINT, "model"] = "(none)"
    per_image.loc[per_image["cell"] == leaderboard.ORACLE_TINT, "model"] = "(none)"
    board, _ = leaderboard.build(runs, _with_spatial(per_image, {}), n_boot=300)
    by = board.set_index("cell")
    assert pd.isna(by.loc[leaderboard.ORACLE_TINT, "rank"])  # a reference row: shown, never ranked
    assert by.loc[leaderboard.ORACLE_TINT, "verdict"] == "reference"
    assert bool(by.loc["beyond", "better_than_oracle_tint"]) and not by.loc["tint", "better_than_oracle_tint"]
    assert leaderboard.verdict(board)["beyond_tint"] == ["beyond"]


def test_verdict_says_plainly_when_no_cell_beats_the_mean_colour():
    truth = _tint_truth(seed=12)
    runs, per_image = _tables({k: truth[k] for k in ("tint", "grey_net", leaderboard.GREY, leaderboard.MEAN_COLOUR)})
    board, _ = leaderboard.build(runs, per_image, n_boot=300)
    v = leaderboard.verdict(board)
    assert v["better_than_grey"] == ["tint"] and v["beyond_tint"] == []
    assert any("No trained cell is significantly better than the stronger baseline (the mean colour" in s
               and "beyond a global tint" in s for s in v["lines"])


@pytest.mark.parametrize("seeds", [1, 3])
def test_the_claim_about_the_losses_needs_three_seeds(seeds):
    runs, per_image = _tables(_tint_truth(seeds=seeds))
    board, _ = leaderboard.build(runs, per_image, n_boot=300)
    v = leaderboard.verdict(board)
    text = " ".join(v["lines"])
    assert v["two_level"] is (seeds >= 3)
    assert ("a claim about the losses" in text) is (seeds >= 3)
    if seeds < 3:
        assert "No claim about the losses themselves: with 1 seed(s)" in text and not v["above_baseline_two_level"]
    else:
        assert v["above_baseline_two_level"] == ["beyond"]
    # the sign-flip line says what it is about
    assert "about these trained networks on these 30 test images" in text
    assert "for a cell with the median spread" in text


def test_decisions_use_the_conservative_p():
    """Six all-positive differences: the exact conservative p is 2/64 for each cell, the randomised one smaller;
    Holm over two cells doubles the conservative one to 1/16 > 0.05: nothing is significant, whatever the
    tie-break hash gives."""
    img = np.linspace(20, 25, 6)
    cells = {"a": img + np.linspace(1, 2, 6), "b": img + np.linspace(1.1, 2.1, 6), leaderboard.GREY: img}
    runs, per_image = _tables(cells)
    board, _ = leaderboard.build(runs, per_image, n_boot=100)
    t = board[board["cell"].isin(["a", "b"])]
    assert np.allclose(t["p_grey_conservative"], 2 / 64) and (t["p_grey_raw"] < 2 / 64).all()
    assert np.allclose(t["p_grey"], 4 / 64) and not t["better_than_grey"].any()


def test_ranking_by_lpips_of_a_random_backbone_says_so_in_the_title():
    truth = _known_truth(seed=2)
    runs, per_image = _tables({c: 40.0 - x for c, x in truth.items()}, metric="lpips")
    for backbone, said in (("random", True), ("imagenet", False)):
        board, failed = leaderboard.build(runs.assign(lpips_backbone=backbone), per_image, n_boot=100, metric="lpips")
        term = leaderboard.to_terminal(board, failed, metric="lpips")
        md = leaderboard.to_markdown(board, failed, metric="lpips")
        assert ("random VGG-16: not a perceptual metric" in term.splitlines()[0]) is said
        assert ("random VGG-16: not a perceptual metric" in md) is said
