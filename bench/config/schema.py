"""The type rules of configuration values, as pydantic v2 models: one set for ``--set``, the command-line options and
``--config`` files; errors that name the file and the key path; a JSON Schema for editors.

The rules (the same wherever a value comes from):

- a whole-number field takes an int, or an integral float (``1e3``); a number field takes an int or a float; neither
  takes ``true``/``false``;
- text fields take text, flags take ``true``/``false``, keyword-argument fields (``loss_params``) a mapping;
- NaN and ±inf are refused anywhere, nested parameters included;
- an unknown key is an error that names the keys allowed there.

This module knows no field of its own: ``bench.config.cell`` builds the model of ``CellConfig``'s fields with
:func:`changes_model`, and ``bench.config.file`` the model of a whole file. :func:`check` runs a model and turns
pydantic's first error into a :class:`ConfigError`, one line.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, StrictStr, ValidationError, create_model


class ConfigError(ValueError):
    """A configuration value or file that breaks the schema: one line naming the file (if any) and the key path.

    Attributes:
        source: the configuration file, or None for ``--set`` and command-line values.
        loc: the key path, e.g. ``("grids", "mine", "cells", "a", "los")``.
        reason: what is wrong, e.g. ``must be a whole number, got 'many'``.
    """

    def __init__(self, message: str, source: Path | None, loc: tuple, reason: str):
        super().__init__(message)
        self.source, self.loc, self.reason = source, loc, reason


class _Nested(ValueError):
    """A bad value inside a mapping field: ``suffix`` is the path below the field (``.style_weight``)."""

    def __init__(self, suffix: str, reason: str):
        super().__init__(reason)
        self.suffix = suffix


def _not_finite(value, path: str = "") -> str | None:
    """The path (below ``value``) of the first NaN or ±inf inside it, or None."""
    if isinstance(value, float) and not math.isfinite(value):
        return path
    children = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, (list, tuple)) \
        else ()
    for k, v in children:
        bad = _not_finite(v, f"{path}.{k}" if isinstance(value, dict) else f"{path}[{k}]")
        if bad is not None:
            return bad
    return None


def _whole(v):
    if isinstance(v, float) and not math.isfinite(v):
        raise ValueError(f"must be finite, got {v}")
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError(f"must be a whole number, got {v!r}")
    return v


def _number(v):
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError(f"must be a finite number, got {v!r}")
    if not math.isfinite(v):
        raise ValueError(f"must be finite, got {v}")
    return float(v)


def _mapping(v):
    if not isinstance(v, dict):
        raise ValueError(f"must be a mapping (JSON object), got {v!r}")
    bad = _not_finite(v)
    if bad is not None:
        raise _Nested(bad, "must be finite, got NaN or infinity")
    return v


#: The schema type of each ``CellConfig`` field type.
Whole = Annotated[int, BeforeValidator(_whole)]
Number = Annotated[float, BeforeValidator(_number)]
Mapping = Annotated[dict[str, Any], BeforeValidator(_mapping)]
FIELD_TYPES = {"int": Whole, "float": Number, "str": StrictStr, "bool": StrictBool, "dict": Mapping}
_WORDS = {"int_type": "must be a whole number", "float_type": "must be a finite number", "string_type": "must be text",
          "bool_type": "must be true or false", "list_type": "must be a list", "dict_type": "must be a mapping"}


def changes_model(dc: type, choices: dict[str, tuple] | None = None, descriptions: dict[str, str] | None = None
                  ) -> type[BaseModel]:
    """A pydantic model of changes to dataclass ``dc``: every field optional, none nullable, no other key.

    Args:
        dc: the dataclass (``CellConfig``); its field types are ``int``, ``float``, ``str``, ``bool`` or ``dict``.
        choices: field → its allowed values, for the JSON Schema (``enum``; the dataclass's own checks enforce them,
            with their own messages).
        descriptions: field → its description, for the JSON Schema.
    """
    fields = {}
    for f in dataclasses.fields(dc):
        kind = f.type if isinstance(f.type, str) else f.type.__name__
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        extra = {"enum": list(choices[f.name])} if choices and f.name in choices else None
        # default None: an absent key; an explicit null is validated (and refused) like any other value
        fields[f.name] = (FIELD_TYPES[kind], Field(None, description=(descriptions or {}).get(f.name),
                                                  json_schema_extra={"default": default, **(extra or {})}))
    return create_model(f"{dc.__name__}Changes", __config__=ConfigDict(extra="forbid"), **fields)


def check(model: type[BaseModel], data, source: Path | None = None) -> BaseModel:
    """Validate ``data`` against ``model``.

    Args:
        model: a pydantic model (e.g. :func:`changes_model`'s).
        data: the parsed values (``--set`` items, or a YAML document).
        source: the configuration file they come from (named in the error), or None.

    Raises:
        ConfigError: the first problem, one line naming ``source`` and the key path.
    """
    try:
        return model.model_validate(data)
    except ValidationError as err:
        errors = err.errors()
        # an unknown key first: a misspelt key is also the reason why the key meant is missing
        first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
        raise _error(model, first, source) from None


def _allowed(model: type[BaseModel], loc: tuple) -> list[str]:
    """The keys the model allows at ``loc`` (the path of an unknown key)."""
    import typing

    current: Any = model
    names = False  # the next part is a name in a mapping (a grid's, a cell's), not a field
    for part in loc[:-1]:
        if names:
            names = False
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel) and part in current.model_fields):
            return []
        ann = current.model_fields[part].annotation
        current = _inner(ann)
        names = any(typing.get_origin(a) is dict for a in (typing.get_args(ann) or (ann,))) or \
            typing.get_origin(ann) is dict
    return list(current.model_fields) if isinstance(current, type) and issubclass(current, BaseModel) else []


def _inner(ann):
    """The model inside an annotation such as ``dict[str, GridModel] | None``."""
    import typing

    for arg in (typing.get_args(ann) or (ann,)):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
        found = _inner(arg) if typing.get_args(arg) else None
        if found is not None:
            return found
    return None


def _error(model: type[BaseModel], e: dict, source: Path | None) -> ConfigError:
    """One pydantic error as a ``ConfigError``."""
    loc = tuple(str(p) for p in e["loc"])
    dotted = ".".join(loc)
    head = f"{source}: " if source is not None else ""
    kind, value = e["type"], e.get("input")
    if kind == "extra_forbidden":
        reason = f"unknown configuration key {dotted}; allowed: {', '.join(_allowed(model, loc))}"
        return ConfigError(head + reason, source, loc, reason)
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        reason = f"expected a mapping (key: value lines), got {type(value).__name__} {value!r:.60}"
        return ConfigError(f"{head}{dotted or 'the top level'}: {reason}", source, loc, reason)
    cause = (e.get("ctx") or {}).get("error")
    if isinstance(cause, _Nested):
        dotted += cause.suffix
    reason = str(cause) if isinstance(cause, Exception) else f"{_WORDS.get(kind, e['msg'])}, got {value!r:.60}"
    # "steps must be a whole number, ..."; "grids.g.cells: a grid needs at least one cell"
    return ConfigError(f"{head}{dotted}{' ' if reason.startswith('must ') else ': '}{reason}", source, loc, reason)
