"""Issue 31, B6/B7 and item 3: every configuration error is found before a run folder, a study or a journal exists.

Loss and model parameter values are checked by their registries at plan time (``losses.check_values``,
``models.check_values``: the kind of each value against the default of the class or factory, then the class's
``check_args``); a configuration file with a list where a mapping belongs names the key."""
from __future__ import annotations

import inspect
import json

import pytest

from bench import tune
import losses
import models

import helpers

TINY = ["--steps", "2", "--set", "size=32", "--set", "crop=32", "--set", "eval_size=32", "--set", "batch_size=4",
        "--device", "cpu", "--no-progress", "--seeds", "1"]
#: a value of the wrong kind for a parameter whose default is of this type (bool before int: a bool is an int)
WRONG = ((bool, "yes"), (int, 2.5), (float, "x"), (str, 3), ((tuple, list), 5))


def wrong_value(default):
    return next((bad for kind, bad in WRONG if isinstance(default, kind)), None)


def typed_parameters(fn, skip=()) -> list[tuple[str, object]]:
    """(name, a wrong value) of every parameter of ``fn`` whose default has a kind."""
    out = []
    for k, p in inspect.signature(fn).parameters.items():
        if k in ("self", *skip) or p.default is inspect.Parameter.empty:
            continue
        bad = wrong_value(p.default)
        if bad is not None:
            out.append((k, bad))
    return out


LOSS_CASES = [(name, k, bad) for name in losses.available() for k, bad in typed_parameters(
    losses.get_class(name).__init__)]
#: values of the right kind that a loss or model refuses (the checks of their ``check_args``)
REFUSED = [("loss", "mse", "space", "hsv"), ("loss", "l1", "space", "hsv"), ("loss", "huber", "reduction", "max"),
           ("loss", "kl", "sigma", -1.0), ("loss", "kl", "reduction", "max"), ("loss", "kl", "neighbours", 0),
           ("loss", "adain", "target", "nope"), ("loss", "adain_style", "vgg_width", 10.0),
           ("loss", "lpips", "backbone", "alexnet"), ("loss", "perceptual", "layers", ["relu9_9"]),
           ("loss", "wgan_gp", "critic_steps", 0), ("loss", "wgan_gp", "critic_width", 10**9),
           ("model", "adain_unet", "skips", "sideways"), ("model", "adain_unet", "train_reference", "mine"),
           ("model", "adain_unet", "arch", "vgg99")]
MODEL_CASES = [(name, k, bad) for name in models.available() for k, bad in typed_parameters(
    models.get_factory(name), skip=("head", "width", "encoder_weights"))]


def test_every_registered_loss_and_model_parameter_is_walked():
    assert {c[0] for c in LOSS_CASES} == set(losses.available())
    assert {c[0] for c in MODEL_CASES} == set(models.available())


def refused(tmp_path, monkeypatch, capsys, argv, *needles) -> str:
    """``ablate argv`` exits 2 with one line naming ``needles`` and leaves no folder under the results root."""
    monkeypatch.setenv("COLORBENCH_RESULTS", str(tmp_path / "results"))
    rc, _, err = helpers.run([*argv, *TINY, "--out", tmp_path / "run"], capsys)
    line = helpers.one_error(rc, err, *needles)
    assert not (tmp_path / "run").exists() and not (tmp_path / "results").exists()
    return line


def cell_file(tmp_path, changes: dict):
    path = tmp_path / "grid.yaml"
    path.write_text(json.dumps({"grids": {"g": {"cells": {"c": changes}}}}))  # JSON is YAML
    return path


@pytest.mark.parametrize("name,key,bad", LOSS_CASES, ids=[f"{n}-{k}" for n, k, _ in LOSS_CASES])
def test_a_wrong_loss_parameter_in_a_cell_is_refused_before_any_folder(tmp_path, monkeypatch, capsys, name, key, bad):
    path = cell_file(tmp_path, {"loss": name, "loss_params": {key: bad}})
    refused(tmp_path, monkeypatch, capsys, ["--config", path, "--grid", "g"], key, "cell c")


@pytest.mark.parametrize("name,key,bad", MODEL_CASES, ids=[f"{n}-{k}" for n, k, _ in MODEL_CASES])
def test_a_wrong_model_parameter_is_refused_before_any_folder(tmp_path, monkeypatch, capsys, name, key, bad):
    refused(tmp_path, monkeypatch, capsys, ["--grid", "smoke", "--models", name, "--set", f"model={name}",
                                            "--set", f"model_params={json.dumps({key: bad})}"], key, f"model {name}")


@pytest.mark.parametrize("what,name,key,bad", REFUSED, ids=[f"{n}-{k}" for _, n, k, _ in REFUSED])
def test_a_refused_parameter_value_is_found_at_plan_time(tmp_path, monkeypatch, capsys, what, name, key, bad):
    if what == "loss":
        path = cell_file(tmp_path, {"loss": name, "loss_params": {key: bad}})
        argv = ["--config", path, "--grid", "g"]
    else:
        argv = ["--grid", "smoke", "--models", name, "--set", f"model={name}", "--set",
                f"model_params={json.dumps({key: bad})}"]
    refused(tmp_path, monkeypatch, capsys, argv, key, f"{what} {name}")


def test_b7_a_space_no_loss_knows_given_by_set_is_refused_before_the_journal(tmp_path, monkeypatch, capsys):
    """B7: ``--set 'loss_params={"space":"hsv"}'`` used to fail in make_step, after study.journal was written."""
    refused(tmp_path, monkeypatch, capsys, ["--grid", "tiny", "--set", 'loss_params={"space":"hsv"}'],
            "space must be one of ab, rgb", "'hsv'")


def test_b7_tune_refuses_the_same_value_before_its_folder(tmp_path, capsys):
    rc = tune.main(["--loss", "mse", "--trials", "1", "--set", 'loss_params={"space":"hsv"}', "--out",
                    str(tmp_path / "t"), *TINY[:-2]])
    helpers.one_error(rc, capsys.readouterr().err, "space must be one of ab, rgb")
    assert not (tmp_path / "t").exists()


@pytest.mark.parametrize("text,key", [("grids: [1, 2]\n", "grids"), ("grids:\n  g: [1]\n", "grids.g"),
                                      ("grids:\n  g:\n    cells: [mse]\n", "grids.g.cells"),
                                      ("set: [1]\n", "set"), ("- 1\n", "the top level"),
                                      ("grids:\n  g:\n    cells:\n      c: [1]\n", "grids.g.cells.c")])
def test_b6_a_list_where_a_mapping_belongs_names_the_key(tmp_path, monkeypatch, capsys, text, key):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    refused(tmp_path, monkeypatch, capsys, ["--config", path, "--grid", "g"], f"{key}: expected a mapping",
            str(path))
