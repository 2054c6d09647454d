"""Loss and model parameters reach the harness through the registries' own metadata (``tunable``, ``shown``,
``prior_bins`` on a loss class; ``shown`` on a model factory; ``reference_view`` on a built model), never by name in
``bench/``: a toy loss registered here is tuned, validated, recorded in ``runs.csv`` and shown by the leaderboard
without a line of ``bench/`` knowing it.
"""
from __future__ import annotations

import ast
import csv
import io
import re
import tokenize
from pathlib import Path

import optuna
import pytest
import torch
from torch import nn

from bench import ablate, tune
from bench.config.cell import CellConfig, preset
from bench.config.params import (
    declared_tunables, numeric_columns, shown_columns, shown_values, symbol, tunables_in_source, tuned_words)
from bench.data.abbins import ABBins
from bench.data.colour import AB_SCALE
from bench.data.sources import CropSchedule
from bench.reporting import leaderboard
from bench.training.loop import build_cell, prepare, train_cell
import losses
import models

ROOT = Path(__file__).resolve().parent.parent
CPU = torch.device("cpu")
TOY = "toy_gain_loss"


class ToyGainLoss(nn.Module):
    """γ · MSE on ab: a loss with its own tunable, shown parameter (``toy_gain``)."""

    head = "ab"
    tunable = {"toy_gain": losses.Tunable(low=0.5, high=4.0, log=True, symbol="γ", label="toy gain γ")}
    shown = ("toy_gain",)

    def __init__(self, toy_gain: float = 1.0, loss_weight: float = 1.0, reduction: str = "mean"):
        super().__init__()
        self.toy_gain, self.loss_weight = toy_gain, loss_weight

    def forward(self, pred, target_ab, **ctx):
        return self.loss_weight * self.toy_gain * ((pred.float() - target_ab.float()) / AB_SCALE).pow(2).mean()


class ToyPriorLoss(ToyGainLoss):
    """Asks for the colour prior when ``use_prior`` is set (as kl does with ``rebalance``)."""

    tunable, shown = {}, ()

    @classmethod
    def prior_bins(cls, params):
        return ABBins(sigma=5.0, neighbours=5) if params.get("use_prior") else None

    def __init__(self, use_prior: bool = False, prior=None, loss_weight: float = 1.0):
        super().__init__(loss_weight=loss_weight)
        self.prior = prior


def _register(name, cls):
    losses.register_loss(name)(cls)


@pytest.fixture
def toy_loss():
    """``toy_gain_loss`` in the loss registry for one test (and gone after it)."""
    _register(TOY, ToyGainLoss)
    yield TOY
    losses.registry._LOSSES.pop(TOY, None)


@pytest.fixture
def toy_prior_loss():
    _register("toy_prior_loss", ToyPriorLoss)
    yield "toy_prior_loss"
    losses.registry._LOSSES.pop("toy_prior_loss", None)


# ------------------------------------------------------------------------------------------- the metadata itself


@pytest.mark.parametrize("name", losses.available())
def test_a_loss_declares_only_parameters_it_takes(name):
    cls = losses.get_class(name)
    taken = losses.parameters(name)
    for key, t in getattr(cls, "tunable", {}).items():
        assert isinstance(t, losses.Tunable) and (taken is None or key in taken), key
        assert t.low < t.high and (t.low > 0 or not (t.log or t.positive))
    for key in getattr(cls, "shown", ()):
        assert taken is None or key in taken, key


@pytest.mark.parametrize("name", models.available())
def test_a_model_shows_only_parameters_it_takes(name):
    taken = models.parameters(name)
    assert all(taken is None or k in taken for k in models.get_factory(name).shown)


def test_registration_refuses_metadata_for_a_parameter_not_taken():
    class Bad(ToyGainLoss):
        shown = ("no_such_parameter",)

    with pytest.raises(ValueError, match="no_such_parameter"):
        losses.register_loss("toy_bad_loss")(Bad)
    assert "toy_bad_loss" not in losses.available()
    with pytest.raises(ValueError, match="no_such_parameter"):
        models.register_model("toy_bad_model", shown=("no_such_parameter",))(lambda head="ab", width=1.0: None)
    assert "toy_bad_model" not in models.available()
    with pytest.raises(ValueError, match="low"):
        losses.Tunable(low=0.0, high=1.0, log=True)


def test_the_existing_columns_keep_their_names_and_order():
    """runs.csv of earlier runs and the tests that read them: ``style_weight`` (the AdaIN losses), then ``skips``
    (adain_unet)."""
    cols = shown_columns()
    assert "style_weight" in cols and "skips" in cols and cols.index("style_weight") < cols.index("skips")
    cfg = CellConfig(model="adain_unet", loss="mse+adain", loss_params={"style_weight": 10.0},
                     model_params={"skips": "none"})
    assert shown_values(cfg) == {**{c: "" for c in cols}, "style_weight": 10.0, "skips": "none"}
    assert set(shown_values(CellConfig()).values()) == {""}


# ----------------------------------------------------------------------------------------------------- tuning


def _suggest(loss, ranges=None):
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    return tune.suggest(study.ask(), loss, ranges=ranges)


@pytest.mark.parametrize("name", losses.available())
def test_tune_searches_lr_and_every_tunable_of_the_loss(name):
    declared = losses.tunables(name)
    params = _suggest(name)
    assert set(params) == {"lr", *declared}
    for key, t in declared.items():
        assert t.low <= params[key] <= t.high
    assert tune.apply_params(preset("quick"), params).loss_params == {k: params[k] for k in declared}


def test_the_toy_loss_is_tuned_validated_and_recorded_without_editing_bench(toy_loss):
    spec = f"mse+{toy_loss}"
    assert set(tune.tunable(spec)) == {"toy_gain"} and not tune.tunable("mse")
    params = _suggest(spec)
    assert set(params) == {"lr", "toy_gain"} and 0.5 <= params["toy_gain"] <= 4.0
    assert set(_suggest(spec, {"toy_gain": (2.0, 2.5)})) == {"lr", "toy_gain"}
    assert 2.0 <= _suggest(spec, {"toy_gain": (2.0, 2.5)})["toy_gain"] <= 2.5
    assert tuned_words(spec) == "lr and toy gain γ" and tuned_words("mse") == "lr" and symbol("toy_gain") == "γ"
    cfg = tune.apply_params(preset("quick").replace(loss=spec), {"lr": 1e-3, "toy_gain": 2.0})
    assert cfg.lr == 1e-3 and cfg.loss_params == {"toy_gain": 2.0}
    cfg.validate()
    with pytest.raises(ValueError, match="loss_params.toy_gain must be positive"):  # Tunable(positive=True)
        cfg.replace(loss_params={"toy_gain": -1.0}).validate()
    # the command line: a generated --toy-gain-range and the generic --range, checked against the loss
    args = tune.parse_args(["--loss", spec, "--toy-gain-range", "1", "3", "--range", "lr=1e-4,1e-3"])
    assert tune.tuned_ranges(args, spec) == ((1e-4, 1e-3), {"toy_gain": (1.0, 3.0)})
    args = tune.parse_args(["--loss", spec, "--range", "toy_gain=1,3"])
    assert tune.tuned_ranges(args, spec)[1] == {"toy_gain": (1.0, 3.0)}
    for bad, words in ((["--range", "toy_gain=3,1"], "0 < LOW < HIGH"), (["--range", "nope=1,2"], "does not tune")):
        with pytest.raises(tune.cli.UsageError, match=words):
            tune.tuned_ranges(tune.parse_args(["--loss", spec, *bad]), spec)
    with pytest.raises(tune.cli.UsageError, match="does not tune 'toy_gain'"):  # mse has no toy_gain to tune
        tune.tuned_ranges(tune.parse_args(["--loss", "mse", "--toy-gain-range", "1", "3"]), "mse")
    # the records: one column per shown parameter, after the existing ones of the losses before it by name
    assert "toy_gain" in shown_columns()
    assert shown_values(cfg)["toy_gain"] == 2.0 and shown_values(preset("quick"))["toy_gain"] == ""


def test_tune_reads_the_declared_tunables_from_the_source_as_the_registry_has_them():
    """``bench.tune``'s --NAME-range options come from the losses' source (its --help imports no torch): every
    registered loss's ``tunable`` must be found there with the registry's range and label."""
    found = tunables_in_source(ROOT / "losses")
    registry = {k: (t.low, t.high, t.label) for k, t in losses.all_tunables().items()}
    assert {k: tuple(t) for k, t in found.items()} == registry, (
        "the tunable parameters read from losses/*.py differ from losses.all_tunables(): declare `tunable` as a "
        "literal dict on the loss class (or a base class in losses/), e.g. tunable = {\"name\": Tunable(low=0.1, "
        "high=10.0, label=\"...\")}, with literal arguments")
    assert declared_tunables() == found  # the registry is imported here: the parser uses it


def test_the_tunable_reader_follows_bases_and_refuses_what_it_cannot_read(tmp_path):
    (tmp_path / "a.py").write_text(
        'class _Base(nn.Module):\n    tunable = {"gain": Tunable(0.5, 4.0, label="gain")}\n\n'
        '@register_loss("b_child")\nclass Child(_Base):\n    pass\n\n'
        '@register_loss("a_none")\nclass NoTunables(_Base):\n    tunable, shown = {}, ()\n\n'
        '@register_loss("c_computed")\nclass Computed(nn.Module):\n    tunable = {"x": Tunable(low=LOW, high=1.0)}\n')
    assert tunables_in_source(tmp_path) == {"gain": (0.5, 4.0, "gain")}


def test_the_old_style_weight_range_flag_still_works():
    args = tune.parse_args(["--loss", "mse+adain_style", "--style-weight-range", "0.1", "10"])
    assert tune.tuned_ranges(args, "mse+adain_style")[1] == {"style_weight": (0.1, 10.0)}


def test_the_toy_loss_column_reaches_runs_csv_and_the_leaderboard(toy_loss, tmp_path, capsys):
    grid = tmp_path / "grid.yaml"
    grid.write_text(f"grids:\n  toy:\n    cells:\n      mse: {{loss: mse}}\n"
                    f"      toy: {{loss: {toy_loss}, loss_params: {{toy_gain: 2.5}}}}\n")
    out = tmp_path / "run"
    argv = ["--config", str(grid), "--grid", "toy", "--seeds", "1", "--folds", "1", "--out", str(out), "--set", "size=32",
            "--set", "crop=32", "--set", "eval_size=32", "--set", "batch_size=4", "--steps", "2", "--device", "cpu",
            "--no-progress"]
    assert ablate.main(argv) == 0, capsys.readouterr().err
    with open(out / "runs.csv", newline="") as fh:
        reader = csv.DictReader(fh)
        header, rows = reader.fieldnames, list(reader)
    assert header.index("style_weight") < header.index("toy_gain") < header.index("skips")
    assert {r["cell"]: r["toy_gain"] for r in rows} == {"mse": "", "toy": "2.5", "grey": "", "mean_colour": "",
                                                             "oracle_tint": ""}
    runs = leaderboard.load_runs(out)
    assert numeric_columns(runs, ["toy_gain", "cell"]) == ["toy_gain"]
    board, _ = leaderboard.build(runs)
    assert "toy_gain" in board and "style_weight" not in board  # only the parameters some run set
    details = leaderboard.details_table(board)
    shown = dict(zip(board["cell"], details["toy_gain"].astype(str)))
    assert shown["toy"] == "2.5" and shown["mse"] == "" and shown["grey"] == ""


# -------------------------------------------------------------------------------- the prior and the reference


def test_kl_asks_for_the_prior_only_when_rebalanced():
    assert losses.prior_bins("kl", {}) is None and losses.prior_bins("mse", {"x": 1}) is None
    bins = losses.prior_bins("l1+kl", {"rebalance": True, "sigma": 3.0})
    assert isinstance(bins, ABBins) and bins.sigma == 3.0


def test_a_loss_gets_the_colour_prior_through_its_metadata(toy_prior_loss):
    cfg = CellConfig(loss=toy_prior_loss, loss_params={"use_prior": True}, width=0.25)
    with pytest.raises(ValueError, match="colour prior"):
        build_cell(cfg, None, CPU)

    class FakePrep:
        def prior(self, bins):
            return torch.full((bins.n_bins,), 1.0 / bins.n_bins)

    _, criterion = build_cell(cfg, FakePrep(), CPU)
    assert criterion.prior is not None and criterion.prior.shape == (ABBins().n_bins,)
    _, criterion = build_cell(cfg.replace(loss_params={}), None, CPU)  # no prior asked for, no data needed
    assert criterion.prior is None


@pytest.mark.parametrize("view", ["same", "other"])
def test_the_trainer_takes_the_reference_the_model_asks_for(view, monkeypatch):
    """adain_unet's ``train_reference`` reaches the trainer as the built model's ``reference_view``."""
    seen = []

    class Drawn(Exception):
        pass

    def reference_batch(self, k, batch_size, other=False):
        seen.append(other)
        raise Drawn

    monkeypatch.setattr(CropSchedule, "reference_batch", reference_batch)
    cfg = preset("quick").replace(model="adain_unet", size=32, crop=32, eval_size=32, batch_size=2, steps=2,
                                  val_every=1, model_params={"train_reference": view})
    assert models.build("adain_unet", width=0.25, train_reference=view).reference_view == view
    with pytest.raises(Drawn):
        train_cell(cfg, prepare(cfg), CPU, progress=False)
    assert seen == [view == "other"]


# ------------------------------------------------------------------------------------- no names in bench/


#: the parameter names that bench/ must not spell, besides whatever the registries declare tunable or shown
NAMED = {"style_weight", "skips", "train_reference", "rebalance"}
#: modules of bench/ that may name them, and why
ALLOWED = {
    "config/grids.py": "the built-in grids are experiment definitions (data, like a --config file): their cells set the "
                "parameters of particular losses and models",
    "styletransfer.py": "the AdaIN style-transfer reproduction has its own style_weight setting, not a registered "
                        "loss's parameter",
}


def _code_text(path: Path) -> str:
    """The source without comments and docstrings (names, strings and f-strings stay)."""
    source = path.read_text(encoding="utf-8")
    docstrings = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value,
                                                                                                     str):
                docstrings.add(first.lineno)
    kept = [tok.string for tok in tokenize.generate_tokens(io.StringIO(source).readline)
            if tok.type != tokenize.COMMENT and not (tok.type == tokenize.STRING and tok.start[0] in docstrings)]
    return " ".join(kept)


def test_bench_names_no_loss_or_model_parameter():
    names = NAMED | set(losses.shown()) | set(models.shown()) | set(losses.all_tunables())
    pattern = re.compile(r"\b(" + "|".join(sorted(names)) + r")\b")
    found = {}
    for path in sorted((ROOT / "bench").rglob("*.py")):
        name = path.relative_to(ROOT / "bench").as_posix()
        if name in ALLOWED:
            continue
        hits = sorted(set(pattern.findall(_code_text(path))))
        if hits:
            found[name] = hits
    assert not found, f"loss/model parameter names in bench/ (declare them in the registry's metadata): {found}"
    assert all((ROOT / "bench" / name).is_file() for name in ALLOWED)  # the allow-list names real modules


def test_the_name_check_sees_code_and_skips_comments_and_docstrings(tmp_path):
    f = tmp_path / "m.py"
    f.write_text('"""style_weight in a docstring."""\n# skips in a comment\nx = {"rebalance": 1}\n'
                 'def f():\n    """train_reference."""\n    return f"{x}"\n')
    text = _code_text(f)
    assert "rebalance" in text and "style_weight" not in text and "skips" not in text
    assert "train_reference" not in text
