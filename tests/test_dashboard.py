"""What optuna-dashboard shows of a grid run, checked through Optuna's API (and, when optuna-dashboard is
importable, through its HTTP API): model, cell and seed as trial parameters, the objective's name, the test metrics
as numeric user attributes, the run's description as study attributes, and the sample images as artifacts."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request

import optuna
import pytest
from optuna.trial import TrialState

from bench import ablate
from bench.core.records import read_rows
from bench.grid import study as gs

TINY = ["--grid", "smoke", "--seeds", "1", "--folds", "1", "--steps", "2", "--set", "size=32", "--set", "crop=32", "--set",
        "eval_size=32", "--set", "batch_size=4", "--set", "val_every=1", "--device", "cpu", "--no-progress"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("dash") / "run"
    assert ablate.main([*TINY, "--out", str(out)]) == 0
    name = json.loads((out / "run.json").read_text())["study"]
    storage = gs.open_storage(out / "study.journal")
    return out, optuna.load_study(study_name=name, storage=storage), storage


def test_trials_carry_model_cell_seed_and_test_metrics(run):
    out, study, _ = run
    rows = {r["cell"]: r for r in read_rows(out / "runs.csv") if r["model"] != "(none)"}
    per_image = read_rows(out / "per_image.csv")
    done = study.get_trials(states=(TrialState.COMPLETE,))
    assert sorted(t.params["cell"] for t in done) == sorted(rows) == ["kl", "mse"]
    for t in done:
        cell = t.params["cell"]
        assert t.params == {"model": "unet_vgg16", "cell": cell, "seed": 0}
        assert t.value == pytest.approx(float(rows[cell]["val_psnr"]))
        for metric in ("psnr", "ssim", "colourfulness"):
            got = t.user_attrs[f"test_{metric}"]
            assert isinstance(got, float)
            mine = [float(r[metric]) for r in per_image if r["cell"] == cell and r["model"] == "unet_vgg16"]
            assert got == pytest.approx(sum(mine) / len(mine))  # the mean over the test images
        assert t.user_attrs["test_psnr"] == pytest.approx(float(rows[cell]["psnr"]))
        assert sorted(t.intermediate_values) == [1, 2]


def test_study_names_its_objective_and_describes_the_run(run):
    _, study, _ = run
    assert study.metric_names == [gs.OBJECTIVE] == ["val PSNR (dB)"]
    attrs = study.user_attrs
    assert attrs["grid"] == "smoke" and attrs["preset"] == "quick" and attrs["data"] == "kodak24-bundled"
    assert attrs["configuration"]["steps"] == 2 and attrs["configuration"]["size"] == 32
    assert attrs["cells"] == {"mse": {"loss": "mse"}, "kl": {"loss": "kl"}} and attrs["seeds"] == 1


def test_sample_images_are_artifacts(run):
    out, study, storage = run
    for t in study.get_trials(states=(TrialState.COMPLETE,)):
        metas = optuna.artifacts.get_all_artifact_meta(t, storage=storage)
        samples = sorted((out / "samples" / "unet_vgg16" / t.params["cell"] / "seed0").glob("*.png"))
        pngs = [m for m in metas if m.filename.endswith(".png")]
        assert samples and sorted(m.filename for m in pngs) == sorted(p.name for p in samples)
        n_test = int(read_rows(out / "runs.csv")[0]["n_test"])
        assert len(samples) == n_test  # every test image, not a few
        record = [m for m in metas if m.filename == "run-record.json"]
        assert len(record) == 1  # the long records: one JSON artifact, not user attributes
        stored = json.loads((out / "artifacts" / record[0].artifact_id).read_text())
        assert stored["row"]["cell"] == t.params["cell"] and len(stored["per_image"]["psnr"]) == n_test
        assert not {"row", "per_image", "history"} & set(t.user_attrs)
        for m in pngs:  # the stored bytes are the sample files
            stored = out / "artifacts" / m.artifact_id
            assert stored.read_bytes() == (samples[0].parent / m.filename).read_bytes()


def test_fold_is_a_trial_parameter_and_every_fold_has_samples(tmp_path):
    """With k-fold rotation each trial's parameters name its fold, and every trial uploads its fold's samples."""
    out = tmp_path / "folds"
    assert ablate.main([*TINY[:TINY.index("--folds")], "--folds", "2", *TINY[TINY.index("--folds") + 2:],
                        "--out", str(out)]) == 0
    name = json.loads((out / "run.json").read_text())["study"]
    storage = gs.open_storage(out / "study.journal")
    done = optuna.load_study(study_name=name, storage=storage).get_trials(states=(TrialState.COMPLETE,))
    assert sorted((t.params["cell"], t.params["fold"]) for t in done) == [("kl", 0), ("kl", 1), ("mse", 0), ("mse", 1)]
    for t in done:
        pngs = [m for m in optuna.artifacts.get_all_artifact_meta(t, storage=storage) if m.filename.endswith(".png")]
        assert pngs, f"trial {t.number} has no sample images"
    images = {p.name for p in (out / "samples" / "truth").rglob("*.png")}
    assert len(images) == 24  # the two folds' test images together: every bundled photo


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_optuna_dashboard_serves_the_run(run):
    pytest.importorskip("optuna_dashboard")
    out, study, _ = run
    port = _free_port()
    # optuna_dashboard.run_server (public API) on the run's journal and artifact folder, in its own process
    code = ("import sys; from optuna_dashboard import run_server; from optuna.artifacts import FileSystemArtifactStore;"
            " from bench.grid.study import open_storage;"
            " run_server(open_storage(sys.argv[1]), host='127.0.0.1', port=int(sys.argv[2]),"
            " artifact_store=FileSystemArtifactStore(sys.argv[3]))")
    proc = subprocess.Popen([sys.executable, "-c", code, str(out / "study.journal"), str(port), str(out / "artifacts")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline, studies = time.monotonic() + 60, None
        while studies is None:
            assert time.monotonic() < deadline and proc.poll() is None
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=5) as r:
                    studies = json.loads(r.read())["study_summaries"]
            except OSError:
                time.sleep(0.5)
        (s,) = [s for s in studies if s["study_name"] == study.study_name]
        assert {a["key"] for a in s["user_attrs"]} >= {"grid", "preset", "data", "configuration"}
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies/{s['study_id']}?after=0", timeout=30) as r:
            detail = json.loads(r.read())
        assert detail["objective_names"] == ["val PSNR (dB)"]
        sortable = {a["key"] for a in detail["union_user_attrs"] if a["sortable"]}  # numeric: plottable
        assert {"test_psnr", "test_ssim", "test_colourfulness"} <= sortable
        done = [t for t in detail["trials"] if t["state"] == "Complete"]
        assert {p["name"] for t in done for p in t["params"]} == {"model", "cell", "seed"}
        assert all(any(a["key"] == "test_psnr" for a in t["user_attrs"]) for t in done)
        assert all(t["artifacts"] for t in done)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
