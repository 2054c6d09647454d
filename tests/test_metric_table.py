"""The metric table (``bench.metrics.table``) and the per-set metrics (ΔCF, FID, KID): values against torchmetrics
and direct recomputations, the paired bootstrap over images, the ground truth's features computed once per set,
and a metric added in one place reaching runs.csv, the leaderboard, ``--rank-by`` and the report."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bench.grid import runfolder
from bench.metrics import stats
import bench.metrics.compute as metrics
from bench.metrics.compute import (delta_cf, evaluate_grey, fid, grey_colorizer, inception_metric, kid, kid_full,
                           lpips_metric, score_set)
from bench.metrics.table import METRICS, Metric, register_metric, unregister_metric


class _Features(torch.nn.Module):
    """Hands torchmetrics our features as they are (its custom-feature path)."""

    def __init__(self, d):
        super().__init__()
        self.num_features = d

    def forward(self, x):
        return x.double()


def _feats(n, d=8, seed=0, shift=0.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64) + shift


def test_fid_equals_torchmetrics():
    from torchmetrics.image.fid import FrechetInceptionDistance

    a, b = _feats(20, seed=1), _feats(30, seed=2, shift=0.5)
    ref = FrechetInceptionDistance(feature=_Features(8))
    ref.set_dtype(torch.float64)
    ref.update(b, real=True)
    ref.update(a, real=False)
    assert fid(a, b) == pytest.approx(float(ref.compute()), rel=1e-6)
    assert fid(a, a) == pytest.approx(0.0, abs=1e-8)


def test_kid_equals_torchmetrics_on_the_whole_sets():
    from torchmetrics.image.kid import KernelInceptionDistance

    a, b = _feats(12, seed=3), _feats(12, seed=4, shift=0.3)
    ref = KernelInceptionDistance(feature=_Features(8), subsets=1, subset_size=12)
    ref.update(b, real=True)
    ref.update(a, real=False)
    mean, _ = ref.compute()
    assert kid_full(a, b) == pytest.approx(float(mean), rel=1e-6)
    assert kid(a, b, subsets=1, subset_size=12)["kid"] == pytest.approx(float(mean), rel=1e-6)
    spread = kid(a, b)  # 100 subsets of n/2: a mean and a spread
    assert spread["kid_std"] > 0 and math.isfinite(spread["kid"])


def _numpy_poly_mmd(x: np.ndarray, y: np.ndarray) -> float:
    """The unbiased MMD² with k(x, y) = (x·y/d + 1)³, written out pair by pair (an independent reference)."""
    d = x.shape[1]
    k = lambda u, v: (float(np.dot(u, v)) / d + 1.0) ** 3  # noqa: E731
    n, m = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(n) for j in range(m)) / (n * m)
    return xx + yy - 2 * xy


@pytest.mark.parametrize("n, m", [(7, 7), (5, 9), (2, 2)])
def test_poly_mmd_equals_a_numpy_reference(n, m):
    from bench.metrics.compute import poly_mmd

    rng = np.random.default_rng(n * 10 + m)
    x, y = rng.normal(size=(n, 6)), rng.normal(0.4, 1.2, size=(m, 6))
    got = poly_mmd(torch.tensor(x), torch.tensor(y))
    assert got.dtype == torch.float64 and float(got) == pytest.approx(_numpy_poly_mmd(x, y), rel=1e-10, abs=1e-12)
    assert float(poly_mmd(torch.tensor(y), torch.tensor(x))) == pytest.approx(float(got), rel=1e-12)  # symmetric


def test_poly_mmd_equals_torchmetrics_while_it_has_one():
    """colorbench's own poly_mmd against torchmetrics' undocumented ``poly_mmd`` (which KID used before), on random
    features of equal-sized sets (torchmetrics' formula assumes them)."""
    from bench.metrics.compute import poly_mmd

    kid_module = pytest.importorskip("torchmetrics.image.kid")
    reference = getattr(kid_module, "poly_mmd", None)
    if reference is None:
        pytest.skip("torchmetrics.image.kid has no poly_mmd any more")
    g = torch.Generator().manual_seed(11)
    for n, d in ((10, 8), (40, 2048)):
        x, y = torch.randn(n, d, generator=g, dtype=torch.float64), torch.randn(n, d, generator=g, dtype=torch.float64)
        y = y * 1.1 + 0.05
        assert float(poly_mmd(x, y)) == pytest.approx(float(reference(x, y)), rel=1e-9, abs=1e-12)


def test_kid_imports_nothing_of_torchmetrics():
    import inspect

    import bench.metrics.compute as metrics

    for fn in (metrics.kid, metrics.kid_full, metrics.poly_mmd, metrics.poly_kernel):
        assert "torchmetrics" not in inspect.getsource(fn).split('"""')[-1], fn.__name__


def test_paired_set_bootstrap_equals_a_direct_recomputation():
    """ΔCF of two cells against the truth, resampled by hand with the same seeded indices."""
    rng = np.random.default_rng(5)
    truth, a, b = rng.uniform(20, 60, 15), rng.uniform(10, 50, 15), rng.uniform(15, 55, 15)
    t, ta, tb = (torch.tensor(x)[:, None] for x in (truth, a, b))
    got = stats.paired_set_bootstrap(lambda i: delta_cf(ta[i], t[i]), lambda i: delta_cf(tb[i], t[i]), 15,
                                     n_boot=500, seed=3)
    idx = np.random.default_rng(3).integers(0, 15, size=(500, 15))
    d = np.abs(a[idx].mean(1) - truth[idx].mean(1)) - np.abs(b[idx].mean(1) - truth[idx].mean(1))
    assert got["diff"] == pytest.approx(abs(a.mean() - truth.mean()) - abs(b.mean() - truth.mean()))
    assert (got["lo"], got["hi"]) == pytest.approx(tuple(np.quantile(d, [0.025, 0.975])))
    # FID on the first resample, recomputed with torchmetrics' own formula on those images
    from torchmetrics.image.fid import _compute_fid

    fa, ft = _feats(15, seed=6, shift=0.2), _feats(15, seed=7)
    i = torch.as_tensor(idx[0])

    def gauss(x):
        return x.mean(0), torch.cov(x.T)

    assert fid(fa[i], ft[i]) == pytest.approx(float(_compute_fid(*gauss(fa[i]), *gauss(ft[i]))), rel=1e-5)


@pytest.fixture
def random_inception(monkeypatch):
    """The seeded untrained Inception (labelled 'random' in every row): tests only."""
    monkeypatch.setattr(metrics, "INCEPTION_BACKBONE", "random")
    return inception_metric("random", "cpu")


def test_fid_kid_with_a_random_inception(random_inception, real_batch):
    imgs = real_batch[:4, :, :48, :48].contiguous()
    nets = {"inception": random_inception}
    same = score_set(lambda u8, s: u8.float() / 255.0, imgs, "cpu", 3, nets)
    grey = score_set(grey_colorizer, imgs, "cpu", 3, nets)
    assert same.status == {"inception_backbone": "random"}
    assert abs(same.per_set["fid"]) < 1e-6 and same.per_set["delta_cf"] == 0
    assert grey.per_set["fid"] > 1e-3
    # KID (unbiased, on random subsets of 2 of these 4 images: noise of either sign), on the whole sets
    assert kid_full(grey.features["kid"], grey.truth["kid"]) > kid_full(same.features["kid"], same.truth["kid"])
    assert math.isfinite(same.per_set["kid"]) and same.per_set["kid_std"] >= 0
    assert grey.per_set["delta_cf"] > 5  # the photos are colourful, grey is not
    assert grey.n == 4 and len(grey.features["fid"]) == 4


def test_without_the_fid_inception_values_are_empty_and_rows_say_missing(monkeypatch, real_batch):
    def offline():
        raise OSError("no network")

    monkeypatch.setattr(metrics, "_StandardInception", offline)
    monkeypatch.setattr(metrics, "_NETS", {})
    net = inception_metric(None, "cpu")
    assert net == (None, "missing")
    row = evaluate_grey(real_batch[:3, :, :32, :32], nets={"inception": net}).row()
    assert row["inception_backbone"] == "missing" and math.isnan(row["fid"]) and math.isnan(row["kid"])
    assert row["delta_cf"] > 0  # needs no network


def test_truth_features_are_computed_once_per_set_and_change_nothing(real_batch, monkeypatch):
    imgs = real_batch[:5, :, :32, :32].contiguous()
    net, status = lpips_metric("random", "cpu")
    nets = {"lpips": (net, status)}
    calls = []
    real = net.features
    monkeypatch.setattr(net, "features", lambda x: calls.append(len(x)) or real(x))
    first = score_set(grey_colorizer, imgs, "cpu", 2, nets).per_image["lpips"]
    n_first = len(calls)
    second = score_set(grey_colorizer, imgs, "cpu", 2, nets).per_image["lpips"]
    assert n_first == 6 and len(calls) - n_first == 3  # truth and prediction, then the prediction only
    uncached = []
    for s in range(0, 5, 2):
        pred, target = grey_colorizer(imgs[s : s + 2]).float(), imgs[s : s + 2].float() / 255.0
        uncached += net.distance(real(pred), real(target)).float().tolist()
    assert first == second == pytest.approx(uncached, abs=0)


def test_dashboard_means_iterate_the_table_and_skip_fold():
    """test_means (then in bench.grid.engine) made a fake test_fold metric from the fold number of k-fold runs."""
    per_image = [{"run": "r", "model": "m", "cell": "c", "seed": 0, "fold": 2, "image": "a.png", "psnr": 20.0},
                 {"run": "r", "model": "m", "cell": "c", "seed": 0, "fold": 2, "image": "b.png", "psnr": 22.0}]
    got = runfolder.test_means(per_image, {"fid": 12.5, "delta_cf": 3.0})
    assert got == {"test_psnr": 21.0, "test_delta_cf": 3.0, "test_fid": 12.5}


def test_every_metric_of_the_table_is_a_rank_by_choice(capsys):
    from bench import cli

    p = cli.parser("ablate", "")
    cli.add(p, "rank_by")
    for name in METRICS:
        assert p.parse_args(["--rank-by", name]).rank_by == name
    with pytest.raises(cli.UsageError, match="unknown metric 'nope'"):
        p.parse_args(["--rank-by", "nope"])


def test_title_names_the_backbone():
    import pandas as pd

    from bench.reporting.leaderboard import ranked_title

    board = pd.DataFrame({"lpips_backbone": ["random", "random"]})
    assert ranked_title(board, "lpips") == "LPIPS, random VGG-16: not a perceptual metric"
    assert ranked_title(board, "psnr") == "PSNR (dB)"


# ------------------------------------------------------------------------------------------------ one entry


@pytest.fixture
def toy_metric():
    """A metric added in one place: one entry of the table."""
    m = register_metric(Metric("toy_abs", higher_is_better=False, label="Toy abs", digits=3,
                               compute=lambda pred, target: (pred - target).abs().mean(dim=(1, 2, 3))))
    yield m
    unregister_metric("toy_abs")


@pytest.mark.slow
def test_a_metric_added_in_one_place_reaches_every_output(toy_metric, random_inception, tmp_path, data_root, capsys):
    from helpers import train_and_test_folders

    from bench import ablate, evaluate, report
    from bench.core.records import read_rows

    train, test, _ = train_and_test_folders(tmp_path, data_root)
    out = tmp_path / "run"
    argv = ["--grid", "smoke", "--seeds", "1", "--data", train, "--test", test, "--out", out, "--steps", "2",
            "--set", "size=32", "--set", "crop=32", "--set", "eval_size=32", "--set", "batch_size=4",
            "--set", "val_every=1", "--set", "lpips_backbone=random", "--device", "cpu", "--no-progress",
            "--rank-by", "toy_abs"]
    assert ablate.main([str(a) for a in argv]) == 0
    rows = read_rows(out / "runs.csv")
    per_image = read_rows(out / "per_image.csv")
    for r in rows:  # every metric of the table in every row, with its network's backbone
        assert {"toy_abs", "delta_cf", "fid", "kid", "kid_std", "lpips"} <= set(r), r.keys()
        assert r["inception_backbone"] == "random" and float(r["fid"]) >= 0
        mine = [float(p["toy_abs"]) for p in per_image if p["cell"] == r["cell"]]
        assert float(r["toy_abs"]) == pytest.approx(sum(mine) / len(mine))
    assert (out / "features").is_dir()
    md = (out / "leaderboard.md").read_text()
    assert "Ranking by Toy abs" in md and "Toy abs" in md.split("Details")[1]
    # evaluate rewrites the leaderboard ranked as the run was (it used to be PSNR whatever --rank-by said)
    assert evaluate.main([str(out), "--test", str(test), "--no-progress"]) == 0
    assert "Ranking by Toy abs" in (out / "leaderboard.md").read_text()
    ev = read_rows(out / "evaluations" / "test" / "runs.csv")
    assert all(r["fid"] != "" and r["toy_abs"] != "" for r in ev)
    # a per-set metric ranks too: paired bootstrap intervals over images, no p-values
    from bench.reporting import leaderboard

    board, _ = leaderboard.build(leaderboard.load_runs(out), leaderboard.load_per_image(out), metric="fid",
                                 features_dir=out / "features")
    from bench.core.records import untrained_mask

    trained = board[~untrained_mask(board["cell"])]  # not grey, the mean colour or the oracle tint
    assert trained["grey_lo"].notna().all() and (trained["grey_lo"] <= trained["grey_hi"]).all()
    assert trained["mean_colour_lo"].notna().all() and (trained["mean_colour_lo"] <= trained["mean_colour_hi"]).all()
    assert "p_grey" not in board
    assert report.main([str(out), "--n-boot", "50"]) == 0
    html = (out / "report.html").read_text()
    assert "Toy abs" in html and "FID" in html and "ΔCF" in html
    capsys.readouterr()
