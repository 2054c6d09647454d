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

Values are checked like ``--set`` values (``bench.config.cell.merge``, which applies ``CellConfig``'s type checks), with
the file and the key path in the message. The YAML is read with limits (``MAX_BYTES``; ``MAX_NODES`` values once
anchors and aliases are expanded, so that nested aliases cannot keep the process busy; ``MAX_DEPTH`` levels), as
UTF-8, and a key given twice in one mapping or two cells whose names read alike (``1`` and ``"1"``) are errors.
The ``plugins`` are imported (``bench.core.plugins``; a relative ``.py`` path is relative to the file) before the rest
is checked, so that the file's grids may use what they register.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from bench.config.cell import CellConfig, PRESETS, merge
from bench.config.grids import GRIDS, Cell, Grid

TOP_KEYS = ("plugins", "preset", "set", "grids")
#: Limits of a configuration file: its size, its values with every alias expanded, and its nesting.
MAX_BYTES, MAX_NODES, MAX_DEPTH = 1 << 20, 100_000, 50
GRID_KEYS = ("description", "cells")


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


def load(path: str | Path) -> ConfigFile:
    """Read and validate a configuration file.

    Args:
        path: a YAML file of the shape in the module docstring.

    Raises:
        ValueError: unreadable file, bad YAML, unknown key, value of the wrong type (one line naming file and key).
    """
    path = Path(path).expanduser()
    data = read_yaml(path)
    if data is None:
        data = {}
    _mapping(data, path, "the top level")
    _known(data, TOP_KEYS, path, "")
    out = ConfigFile(path, plugins=_plugins(data.get("plugins"), path))
    if data.get("preset") is not None:
        if data["preset"] not in PRESETS:
            raise ValueError(f"{path}: preset: unknown preset {data['preset']!r}; available: {', '.join(PRESETS)}")
        out.preset = data["preset"]
    if data.get("set") is not None:
        _mapping(data["set"], path, "set")
        out.changes = dict(data["set"])
        _check(out.changes, path, "set")
    if data.get("grids") is not None:
        _mapping(data["grids"], path, "grids")  # grids: [1, 2] is a list where grid name → grid belongs
    for name, g in (data.get("grids") or {}).items():
        where = f"grids.{name}"
        _mapping(g, path, where)
        _known(g, GRID_KEYS, path, where + ".")
        if name in GRIDS:
            raise ValueError(f"{path}: {where}: grid {name!r} is one of colorbench's own grids; choose another name")
        cells = g.get("cells")
        if not cells:
            raise ValueError(f"{path}: {where}.cells: a grid needs at least one cell")
        _mapping(cells, path, where + ".cells")
        made, names = [], {}
        for cname, changes in cells.items():
            if str(cname) in names:
                raise ValueError(f"{path}: {where}.cells: cells {names[str(cname)]!r} and {cname!r} have the same "
                                 f"name {str(cname)!r}; rename one")
            names[str(cname)] = cname
            changes = {} if changes is None else changes
            _mapping(changes, path, f"{where}.cells.{cname}")
            _check({**out.changes, **changes}, path, f"{where}.cells.{cname}")
            made.append(Cell(str(cname), dict(changes)))
        if str(name) in out.grids:
            raise ValueError(f"{path}: {where}: two grids are named {str(name)!r}; rename one")
        out.grids[str(name)] = Grid(str(name), str(g.get("description", f"grid {name} of {path.name}")), tuple(made))
    return out


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
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ValueError(f"{path}: plugins: expected a list of module names or .py paths (e.g. plugins: [my_losses]),"
                         f" got {value!r:.60}")
    try:
        import_all(value, path.parent)
    except ValueError as err:  # bench.core.plugins.PluginError
        raise ValueError(f"{path}: plugins: {err}") from None
    return list(value)


def _mapping(value, path: Path, where: str) -> None:
    if not isinstance(value, dict):
        raise ValueError(f"{path}: {where}: expected a mapping (key: value lines), got {type(value).__name__} "
                         f"{value!r:.60}")


def _known(data: dict, keys: tuple[str, ...], path: Path, prefix: str) -> None:
    unknown = [str(k) for k in data if k not in keys]
    if unknown:
        raise ValueError(f"{path}: unknown key(s) {', '.join(prefix + k for k in unknown)}; allowed: "
                         f"{', '.join(prefix + k for k in keys)}")


def _check(changes: dict, path: Path, where: str) -> None:
    """The ``--set`` checks: known fields, values of the fields' types."""
    try:
        merge(CellConfig(), changes)
    except (ValueError, TypeError) as err:
        raise ValueError(f"{path}: {where}: {err}") from None
