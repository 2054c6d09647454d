"""Configuration files (``--config FILE.yaml``): preset overrides and grid definitions, so that a user defines a
grid without touching the package.

The shape (every top-level key is optional)::

    plugins: [my_losses, ./extra_loss.py]   # modules or .py files that register losses, models, metrics
    preset: quick              # as --preset (the command line wins)
    set:                       # CellConfig overrides, as --set (command-line options and --set win)
      steps: 300
      loss_params: {rebalance: true}
    grids:
      mine:
        description: a grid defined in a file
        cells:                 # cell name → the CellConfig fields it changes from the base configuration
          mse: {loss: mse}
          l1: {loss: l1}

The file is checked against its schema (pydantic v2, :func:`file_schema`; values by the same rules as ``--set``,
``bench.config.schema``): an error is one line that names the file and the key path, and :func:`json_schema` is the
JSON Schema an editor can check the file with. The YAML is read with limits (``MAX_BYTES``; ``MAX_NODES`` values once
anchors and aliases are expanded, so that nested aliases cannot keep the process busy; ``MAX_DEPTH`` levels), as
UTF-8, and a key given twice in one mapping or two cells whose names read alike (``1`` and ``"1"``) are errors.
The ``plugins`` are imported (``bench.core.plugins``; a relative ``.py`` path is relative to the file) once the file
is valid, before any grid is planned, so that the file's grids may use what they register.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictStr, create_model

from bench.config.cell import PRESETS, changes_schema
from bench.config.grids import GRIDS, Cell, Grid
from bench.config.schema import check

#: Limits of a configuration file: its size, its values with every alias expanded, and its nesting.
MAX_BYTES, MAX_NODES, MAX_DEPTH = 1 << 20, 100_000, 50


@dataclass
class ConfigFile:
    """What a configuration file holds.

    Attributes:
        path: the file.
        plugins: the modules and ``.py`` files of its ``plugins:`` list (imported when it was read).
        preset: a preset name, or None.
        changes: ``CellConfig`` overrides of the ``set:`` block.
        grids: the grids it defines, by name.
    """

    path: Path
    plugins: list[str] = field(default_factory=list)
    preset: str | None = None
    changes: dict = field(default_factory=dict)
    grids: dict[str, Grid] = field(default_factory=dict)


def _names(value):
    """A mapping of names (grids, cells) with its keys as text; two keys that read alike (``1`` and ``"1"``) are an
    error."""
    if not isinstance(value, dict):
        return value  # the model's own "expected a mapping" error follows
    seen: dict = {}
    for key in value:
        if str(key) in seen:
            raise ValueError(f"{seen[str(key)]!r} and {key!r} read as the same name {str(key)!r}; rename one")
        seen[str(key)] = key
    return {str(k): v for k, v in value.items()}


def _preset(value):
    if value is not None and value not in PRESETS:
        raise ValueError(f"unknown preset {value!r}; available: {', '.join(PRESETS)}")
    return value


def _plugin_list(value):
    if value is not None and (not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value)):
        raise ValueError(f"expected a list of module names or .py paths (e.g. plugins: [my_losses]), got {value!r:.60}")
    return value


def _cells(value):
    if not value:
        raise ValueError("a grid needs at least one cell")
    return _names(value)


@lru_cache(maxsize=1)
def file_schema() -> type[BaseModel]:
    """The pydantic model of a configuration file (its ``set:`` and cells are ``CellConfig`` changes)."""
    changes = changes_schema()
    strict = ConfigDict(extra="forbid")
    grid = create_model(
        "Grid", __config__=strict, __doc__="One grid: a description and its cells (name → the fields it changes).",
        description=(StrictStr | None, None),
        cells=(Annotated[dict[str, changes | None], BeforeValidator(_cells)], Field(None, validate_default=True)))
    return create_model(
        "ConfigFile", __config__=ConfigDict(extra="forbid", title="colorbench configuration file"),
        __doc__="A colorbench configuration file (--config FILE.yaml); every key is optional.",
        plugins=(Annotated[list[str] | None, BeforeValidator(_plugin_list)], Field(
            None, description="modules or .py files (relative to the file) that register losses, models, metrics")),
        preset=(Annotated[str | None, BeforeValidator(_preset)], Field(
            None, description="as --preset (the command line wins)", json_schema_extra={"enum": list(PRESETS)})),
        set=(changes | None, Field(None, description="CellConfig overrides, as --set (the command line wins)")),
        grids=(Annotated[dict[str, grid] | None, BeforeValidator(_names)], Field(
            None, description="grid name → its description and cells")))


def json_schema() -> dict:
    """The JSON Schema of a configuration file, for editors (``colorbench --config-schema``)."""
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **file_schema().model_json_schema()}


def load(path: str | Path) -> ConfigFile:
    """Read and validate a configuration file.

    Args:
        path: a YAML file of the shape in the module docstring.

    Raises:
        ValueError: unreadable file or bad YAML (one line naming the file); ``bench.config.schema.ConfigError``
            (a ValueError) for an unknown key or a value of the wrong type, naming the file and the key path.
    """
    path = Path(path).expanduser()
    data = read_yaml(path)
    doc = check(file_schema(), {} if data is None else data, path)
    out = ConfigFile(path, plugins=_plugins(doc.plugins, path), preset=doc.preset,
                     changes=_changes(doc.set))
    for name, g in (doc.grids or {}).items():
        if name in GRIDS:
            raise ValueError(f"{path}: grids.{name}: grid {name!r} is one of colorbench's own grids; choose another "
                             f"name")
        cells = tuple(Cell(cname, _changes(changes)) for cname, changes in g.cells.items())
        out.grids[name] = Grid(name, g.description or f"grid {name} of {path.name}", cells)
    return out


def _changes(model: BaseModel | None) -> dict:
    """The fields a ``set:`` block or a cell gives (checked and converted: ``1e3`` → 1000)."""
    return {} if model is None else model.model_dump(exclude_unset=True)


def read_yaml(path: Path):
    """The YAML document of ``path``, read within the limits; a ``ValueError`` naming the file otherwise."""
    import yaml

    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_BYTES + 1)
    except OSError as err:
        raise ValueError(f"cannot read configuration file {path} ({err.strerror or err})") from None
    if len(raw) > MAX_BYTES:
        raise ValueError(f"{path}: larger than {MAX_BYTES // 1024} KiB; a configuration file is a few lines")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise ValueError(f"{path}: line {line}: not UTF-8 text (byte 0x{raw[err.start]:02x}); save the file as "
                         f"UTF-8") from None
    loader = None
    try:
        loader = _loader_class()(text)  # the reader refuses control characters here already
        node = loader.get_single_node()
        if node is None:
            return None
        size = _expanded_size(node, {}, set(), 0, path)
        if size > MAX_NODES:
            raise ValueError(f"{path}: {size} values once its anchors and aliases are expanded (at most {MAX_NODES} "
                             f"are read)")
        return loader.construct_document(node)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ValueError(f"{path}:{where} not valid YAML ({getattr(err, 'problem', None) or err})") from None
    except RecursionError:
        raise ValueError(f"{path}: nested more than {MAX_DEPTH} levels deep") from None
    finally:
        if loader is not None:
            loader.dispose()


def _expanded_size(node, memo: dict, open_: set, depth: int, path: Path) -> int:
    """How many YAML nodes ``node`` stands for with every alias expanded (shared nodes are counted once per use)."""
    import yaml

    if id(node) in memo:
        return memo[id(node)]
    if id(node) in open_:
        raise ValueError(f"{path}: line {node.start_mark.line + 1}: an alias refers to the value that holds it")
    if depth > MAX_DEPTH:
        raise ValueError(f"{path}: line {node.start_mark.line + 1}: nested more than {MAX_DEPTH} levels deep")
    open_.add(id(node))
    if isinstance(node, yaml.SequenceNode):
        n = 1 + sum(_expanded_size(c, memo, open_, depth + 1, path) for c in node.value)
    elif isinstance(node, yaml.MappingNode):
        n = 1 + sum(_expanded_size(k, memo, open_, depth + 1, path) + _expanded_size(v, memo, open_, depth + 1, path)
                    for k, v in node.value)
    else:
        n = 1
    open_.discard(id(node))
    memo[id(node)] = n
    return n


@lru_cache(maxsize=1)
def _loader_class():
    import yaml

    class Loader(yaml.SafeLoader):
        """``yaml.SafeLoader`` that refuses a key given twice in one mapping."""

        def construct_mapping(self, node, deep=False):
            seen: dict = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:  # an unhashable key: SafeLoader's own error follows
                    continue
                if first is not None:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"key {key!r} given twice (first on line {first})", key_node.start_mark)
                seen[key] = key_node.start_mark.line + 1
            return super().construct_mapping(node, deep)

    return Loader


def _plugins(value, path: Path) -> list[str]:
    """The ``plugins:`` list, checked (a list of module names or file paths) and imported."""
    from bench.core.plugins import import_all

    if value is None:
        return []
    try:
        import_all(value, path.parent)
    except ValueError as err:  # bench.core.plugins.PluginError
        raise ValueError(f"{path}: plugins: {err}") from None
    return list(value)
