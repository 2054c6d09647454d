"""The configuration schema (``bench.config.schema``, pydantic v2): typed errors that name the file and the key path,
one type rule for ``--set`` and files, and the JSON Schema that editors read (``colorbench --config-schema``)."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from bench import cli
from bench.config import file as configfile
from bench.config.cell import CellConfig, check_values
from bench.config.schema import ConfigError

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = ROOT / "docs" / "grids" / "colorbench-config.schema.json"
#: a value of the wrong type for each kind of CellConfig field
WRONG = {int: "many", float: "fast", str: 3, bool: 1, dict: [1, 2]}


@pytest.mark.parametrize("field", [f.name for f in dataclasses.fields(CellConfig)])
def test_every_field_refuses_a_value_of_another_type_naming_the_field(field, tmp_path):
    kind = type(getattr(CellConfig(), field))
    with pytest.raises(ConfigError) as got:
        check_values({field: WRONG[kind]})
    assert got.value.loc == (field,) and got.value.source is None and str(got.value).startswith(field)
    path = tmp_path / "c.yaml"
    path.write_text(f"grids: {{mine: {{cells: {{a: {{{field}: {json.dumps(WRONG[kind])}}}}}}}}}\n")
    with pytest.raises(ConfigError) as got:
        configfile.load(path)
    assert got.value.source == path and got.value.loc == ("grids", "mine", "cells", "a", field)
    assert str(got.value).startswith(f"{path}: grids.mine.cells.a.{field} ")
    assert "\n" not in str(got.value)


def test_the_type_rules_convert_as_documented():
    assert check_values({"steps": 1e3, "lr": 1, "width": 0.5}) == {"steps": 1000, "lr": 1.0, "width": 0.5}
    for bad, words in (({"batch_size": True}, "whole number"), ({"lr": float("inf")}, "finite"),
                       ({"loss_params": {"a": {"b": float("nan")}}}, "loss_params.a.b must be finite"),
                       ({"steps": None}, "whole number"), ({"stepz": 1}, "allowed: model, loss")):
        with pytest.raises(ConfigError, match=words):
            check_values(bad)


@pytest.mark.parametrize("text, loc, words", [
    ("grids: [1, 2]\n", ("grids",), "expected a mapping"),
    ("gridz: {}\n", ("gridz",), "allowed: plugins, preset, set, grids"),
    ("grids: {g: {cellz: {a: {loss: mse}}}}\n", ("grids", "g", "cellz"), "allowed: description, cells"),
    ("grids: {g: {cells: {1: {loss: mse}, '1': {loss: l1}}}}\n", ("grids", "g", "cells"), "same name"),
    ("set: {loss_params: {w: .inf}}\n", ("set", "loss_params"), "set.loss_params.w must be finite"),
    ("plugins: my_losses\n", ("plugins",), "a list of module names"),
])
def test_a_bad_file_names_the_key_path(text, loc, words, tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as got:
        configfile.load(path)
    assert got.value.loc == loc and words in str(got.value) and str(got.value).startswith(f"{path}: ")


def test_the_committed_json_schema_is_the_current_one():
    assert json.loads(COMMITTED.read_text(encoding="utf-8")) == configfile.json_schema(), \
        "regenerate it: colorbench --config-schema > docs/grids/colorbench-config.schema.json"


def test_the_json_schema_describes_every_field_and_refuses_unknown_keys():
    schema = configfile.json_schema()
    defs = schema["$defs"]
    cell = defs["CellConfigChanges"]
    assert schema["additionalProperties"] is False and cell["additionalProperties"] is False
    assert defs["Grid"]["additionalProperties"] is False
    assert set(cell["properties"]) == {f.name for f in dataclasses.fields(CellConfig)}
    assert all(p.get("description") for p in cell["properties"].values()), "a field without a description"
    assert cell["properties"]["lr_schedule"]["enum"] == ["constant", "cosine", "linear"]
    assert cell["properties"]["steps"]["type"] == "integer" and cell["properties"]["lr"]["type"] == "number"
    assert "quick" in schema["properties"]["preset"]["enum"]


def test_colorbench_prints_the_schema(capsys):
    assert cli.main(["--config-schema"]) == 0
    assert json.loads(capsys.readouterr().out) == configfile.json_schema()
