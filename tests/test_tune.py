"""bench.tune on a tiny CPU configuration: pruning happens, the best parameters are saved, a seed repeats its
sequence of suggestions, and bad input exits with code 2."""
from __future__ import annotations

import importlib.util
import json

import optuna
import pytest
from optuna.trial import TrialState

from bench import tune
from bench.grid import study as gs

# 6 trials of 6 steps (4 crops each), validation every 2 steps; TPE and the MedianPruner start after 2 trials
TINY = ["--loss", "mse", "--steps", "6", "--set", "val_every=2", "--set", "batch_size=4", "--trials", "6",
        "--startup-trials", "2", "--seed", "0", "--no-progress", "--heartbeat", "2"]


def load(out):
    name = json.loads((out / "best_params.json").read_text())["study"]
    return optuna.load_study(study_name=name, storage=gs.open_storage(out / "study.journal"))


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """One real tuning run (module-scoped: several tests read it)."""
    out = tmp_path_factory.mktemp("tune") / "a"
    assert tune.main([*TINY, "--out", str(out)]) == 0
    return out


@pytest.mark.slow
def test_tune_prunes_and_saves_best_parameters(tuned, capsys):
    study = load(tuned)
    states = [t.state for t in study.trials]
    assert len(states) == 6 and TrialState.PRUNED in states and TrialState.COMPLETE in states
    pruned = [t for t in study.trials if t.state == TrialState.PRUNED]
    assert all(t.last_step < 6 for t in pruned)  # stopped before the last step
    record = json.loads((tuned / "best_params.json").read_text())
    assert set(record["params"]) == {"lr"}  # mse has no style weight to tune
    assert record["params"] == study.best_params and record["value"] == pytest.approx(study.best_value)
    assert record["study"] == "tune-unet_vgg16-mse-quick-kodak24-bundled"
    assert (tuned / "history.png").stat().st_size > 0
    if (tuned / "importance.png").exists():
        assert (tuned / "importance.png").stat().st_size > 0
    else:  # Optuna 4.x: its default importance evaluator (fANOVA) needs scikit-learn, which is not installed
        assert int(optuna.__version__.split(".")[0]) < 5 and importlib.util.find_spec("sklearn") is None
    assert all(1e-5 <= t.params["lr"] <= 1e-2 for t in study.trials)
    # re-running the finished command trains nothing and prints the best parameters again
    capsys.readouterr()
    assert tune.main([*TINY, "--out", str(tuned)]) == 0
    assert len(load(tuned).trials) == 6
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == record["params"]


@pytest.mark.slow
def test_same_seed_same_suggestions(tuned, tmp_path):
    out = tmp_path / "b"
    assert tune.main([*TINY, "--out", str(out)]) == 0
    first, second = load(tuned).trials, load(out).trials
    assert [t.params for t in first] == [t.params for t in second]
    assert [t.state for t in first] == [t.state for t in second]


def test_seed_controls_the_sequence_without_training():
    def sequence(seed):
        study = optuna.create_study(direction="maximize")
        for _ in range(8):
            trial = study.ask()
            study.sampler = tune.make_sampler(seed, trial.number, 2)
            p = tune.suggest(trial, "mse")
            study.tell(trial, -abs(p["lr"] - 1e-3))
        return [t.params["lr"] for t in study.trials]

    assert sequence(0) == sequence(0)
    assert sequence(0) != sequence(1)


def test_style_weight_is_tuned_only_for_losses_that_have_one():
    assert not tune.tunable("mse") and not tune.tunable("l1+0.5*kl")
    assert set(tune.tunable("mse+10*adain_style")) == {"style_weight"}  # declared by the loss (losses/adain.py)
    cfg = tune.apply_params(tune.preset("quick"), {"lr": 1e-3, "style_weight": 10.0})
    assert cfg.lr == 1e-3 and cfg.loss_params["style_weight"] == 10.0


def test_bad_input_exits_2(tmp_path, capsys, tuned):
    for bad in (["--lr-range", "1e-2", "1e-4"], ["--trials", "0"], ["--loss", "nope"], ["--set", "steps=0"],
                ["--storage", "postgresql+psycopg://u:pw@127.0.0.1:1/x"]):
        assert tune.main([*TINY, "--out", str(tmp_path / "x"), *bad]) == 2, bad
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and len(err.splitlines()) == 1 and "pw@" not in err, err
    # the same study with another configuration is refused
    assert tune.main([*TINY, "--out", str(tuned), "--set", "batch_size=8"]) == 2
    assert "another configuration" in capsys.readouterr().err
