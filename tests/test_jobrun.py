"""The training of one job (``bench.grid.jobrun``) without a study: a tiny configuration on the bundled Kodak24 gives a
run row, one per-image row per test image and one history row per validation, saves its weights and samples, and
leaves no checkpoint; a divergence is a failed row; the baselines are scored without training."""
from __future__ import annotations

import json

import pytest
import torch

from bench.config.cell import preset
import bench.grid.jobrun
from bench.grid.jobrun import JobTrainer, mean_abs, split_sizes
from bench.grid.plan import Job
from bench.training.loop import DivergenceError, prepare

CPU = torch.device("cpu")
SHARED = {"run": "r", "grid": "g", "data_train": "kodak24-bundled", "data_test": "kodak24-bundled"}


@pytest.fixture(scope="module")
def tiny():
    """2 steps of 4 crops of 32 px, a validation after each (one split of the bundled Kodak24)."""
    cfg = preset("quick").replace(size=32, crop=32, eval_size=32, batch_size=4, steps=2, val_every=1)
    return cfg, prepare(cfg)


def test_a_job_trains_into_its_rows(tiny, tmp_path):
    cfg, prep = tiny
    seen = []
    trainer = JobTrainer(tmp_path, CPU, SHARED, progress=False)
    row, per_image, history, samples = trainer.train(Job("unet_vgg16", "mse", cfg.replace(seed=1)), prep,
                                                     on_validation=lambda step, psnr: seen.append(step))
    assert row["status"] == "ok" and row["model"] == "unet_vgg16" and row["cell"] == "mse" and row["seed"] == 1
    assert list(row)[:len(SHARED) + 5] == [*SHARED, "n_train", "n_val", "n_test", "model", "cell"]
    assert {k: row[k] for k in ("n_train", "n_val", "n_test")} == split_sizes(prep)
    assert "fold" not in row and row["style_weight"] == "" and row["skips"] == ""
    assert [r["image"] for r in per_image] == prep.test_keys
    assert all(r["run"] == "r" and r["test_set"] == "kodak24-bundled" and "psnr" in r for r in per_image)
    assert [h["step"] for h in history] == seen == [1, 2]
    assert samples and all(p.is_file() for p in samples)
    folder = tmp_path / "models" / "unet_vgg16" / "mse" / "seed1"
    assert (folder / "model.safetensors").is_file() and not list(tmp_path.rglob("checkpoint.pt"))


def test_a_fold_job_without_saved_models(tiny, tmp_path):
    cfg, prep = tiny
    trainer = JobTrainer(tmp_path, CPU, SHARED, folds=2, progress=False, save_models=False)
    row, per_image, history, _ = trainer.train(Job("unet_vgg16", "mse", cfg, fold=1), prep)
    assert row["status"] == "ok" and row["fold"] == 1 and row["folds"] == 2
    assert {r["fold"] for r in per_image} == {r["fold"] for r in history} == {1}
    assert not list(tmp_path.rglob("model.safetensors")) and not list(tmp_path.rglob("checkpoint.pt"))


def test_a_divergence_is_a_failed_row(tiny, tmp_path, monkeypatch):
    cfg, prep = tiny

    def diverge(*args, **kwargs):
        raise DivergenceError(7, "loss is nan")

    monkeypatch.setattr(bench.grid.jobrun, "train_cell", diverge)
    result = JobTrainer(tmp_path, CPU, SHARED, progress=False).train(Job("unet_vgg16", "mse", cfg), prep)
    assert result.row["status"] == "failed" and result.row["failed_step"] == 7
    assert result.row["error"] == "loss is nan" and "finished_at" in result.row
    assert result.per_image == result.history == result.samples == []


def test_baselines_need_no_training(tiny, tmp_path):
    cfg, prep = tiny
    out = JobTrainer(tmp_path, CPU, SHARED, progress=False).baselines([prep], cfg.lpips_backbone)
    assert [r["cell"] for r, _ in out] == ["grey", "mean_colour"]
    for row, per_image in out:
        assert row["model"] == "(none)" and row["status"] == "ok" and row["seed"] == 0
        assert [r["image"] for r in per_image] == prep.test_keys
        assert row["psnr"] == pytest.approx(sum(r["psnr"] for r in per_image) / len(per_image))
    assert json.loads(out[1][0]["mean_ab"]) == mean_abs([prep])  # the constant of the mean-colour baseline
