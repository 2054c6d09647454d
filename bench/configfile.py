"""Configuration files (``--config FILE.yaml``): preset overrides and grid definitions, so that a user defines a
grid without touching the package.

The shape (every top-level key is optional)::

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

Values are checked like ``--set`` values (``bench.config.merge``, which applies ``CellConfig``'s type checks), with
the file and the key path in the message.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .config import CellConfig, PRESETS, merge
from .grids import GRIDS, Cell, Grid

TOP_KEYS = ("preset", "set", "grids")
GRID_KEYS = ("description", "cells")


@dataclass
class ConfigFile:
    """What a configuration file holds.

    Attributes:
        path: the file.
        preset: a preset name, or None.
        changes: ``CellConfig`` overrides of the ``set:`` block.
        grids: the grids it defines, by name.
    """

    path: Path
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
    import yaml

    path = Path(path).expanduser()
    try:
        text = path.read_text()
    except OSError as err:
        raise ValueError(f"cannot read configuration file {path} ({err.strerror or err})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ValueError(f"{path}:{where} not valid YAML ({getattr(err, 'problem', None) or err})") from None
    if data is None:
        data = {}
    _mapping(data, path, "the top level")
    _known(data, TOP_KEYS, path, "")
    out = ConfigFile(path)
    if data.get("preset") is not None:
        if data["preset"] not in PRESETS:
            raise ValueError(f"{path}: preset: unknown preset {data['preset']!r}; available: {', '.join(PRESETS)}")
        out.preset = data["preset"]
    if data.get("set") is not None:
        _mapping(data["set"], path, "set")
        out.changes = dict(data["set"])
        _check(out.changes, path, "set")
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
        made = []
        for cname, changes in cells.items():
            changes = {} if changes is None else changes
            _mapping(changes, path, f"{where}.cells.{cname}")
            _check({**out.changes, **changes}, path, f"{where}.cells.{cname}")
            made.append(Cell(str(cname), dict(changes)))
        out.grids[str(name)] = Grid(str(name), str(g.get("description", f"grid {name} of {path.name}")), tuple(made))
    return out


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
