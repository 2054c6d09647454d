"""Plugins: losses, models and metrics added without editing colorbench, and the record of which were loaded.

Three ways in, each importing a module that registers what it defines with the registries' own decorators
(``losses.register_loss``, ``models.register_model``, ``bench.metrics.table.register_metric``):

- an installed distribution's entry points in the groups ``colorbench.losses``, ``colorbench.models`` and
  ``colorbench.metrics`` (loaded once, the first time that registry is listed or looked up; the command line loads
  them right after parsing, so that a broken one stops a command before it does anything);
- ``--import MODULE`` on any command: a module name, or the path of a ``.py`` file;
- ``plugins: [MODULE, ...]`` in a ``--config`` file (a relative ``.py`` path is relative to the file).

A plugin that fails to load raises :class:`PluginError`, one line naming it and its error. What was loaded (name
and version of the distribution, or a file's SHA-256) is recorded with every result
(``bench.core.records.environment``).

Imports nothing but the standard library (the registries call it).
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from importlib import metadata
from pathlib import Path

from bench.core.log import get_logger

log = get_logger(__name__)
GROUPS = ("colorbench.losses", "colorbench.models", "colorbench.metrics")

#: groups whose entry points were loaded (or are being loaded: a plugin that looks a registry up while it loads
#: does not load its group again)
_loaded_groups: set[str] = set()
#: what was loaded, in order: ``{"name": ..., "version": ...}`` or ``{"name": ..., "sha256": ...}``, by key
_loaded: dict[str, dict] = {}


class PluginError(ValueError):
    """A plugin that cannot be loaded: its name and its error, one line."""


def _error_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


def _distribution_of(ep) -> tuple[str, str]:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return "", ""
    return dist.metadata["Name"] or "", dist.version or ""


def load_group(group: str) -> None:
    """Load the entry points of ``group`` (once per process).

    Args:
        group: one of :data:`GROUPS`.

    Raises:
        PluginError: an entry point failed to load (named with its distribution and error).
    """
    if group in _loaded_groups:
        return
    _loaded_groups.add(group)
    for ep in sorted(metadata.entry_points(group=group), key=lambda e: e.name):
        dist, version = _distribution_of(ep)
        where = f"entry point {ep.name} = {ep.value} (group {group}{', ' + dist + ' ' + version if dist else ''})"
        try:
            ep.load()
        except Exception as err:  # noqa: BLE001 - any error of a plugin is reported, in one line
            raise PluginError(f"plugin {where} failed to load: {_error_line(err)}") from None
        _loaded.setdefault(f"{group}:{ep.name}", {"name": dist or ep.value.split(":")[0], "entry_point": ep.name,
                                                  "group": group, "version": version})
        log.debug(f"loaded plugin {where}")


def load_all() -> None:
    """Load the entry points of every group (:data:`GROUPS`)."""
    for group in GROUPS:
        load_group(group)


def sha256_of(path: Path) -> str:
    """The SHA-256 of a file's bytes, hex."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _version_of_module(name: str) -> str:
    """The version of the distribution that provides top-level module ``name``, or its ``__version__``, or ''."""
    top = name.split(".")[0]
    for dist in metadata.packages_distributions().get(top, []):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return str(getattr(sys.modules.get(name), "__version__", "") or "")


def import_plugin(spec: str, base: str | Path | None = None) -> None:
    """Import one plugin: a module name (``my_losses``, ``pkg.mod``) or the path of a ``.py`` file (once).

    Args:
        spec: the module or file, as ``--import`` or a config file's ``plugins:`` gives it.
        base: the folder a relative file path is relative to (default: the current folder).

    Raises:
        PluginError: no such module or file, or the module raised while it was imported.
    """
    if spec.endswith(".py") or "/" in spec or "\\" in spec:
        _import_file(Path(base or ".").expanduser() / Path(spec).expanduser())
        return
    if spec in _loaded:
        return
    try:
        importlib.import_module(spec)
    except Exception as err:  # noqa: BLE001 - any error of a plugin is reported, in one line
        raise PluginError(f"plugin {spec} (--import or plugins:) failed to load: {_error_line(err)}") from None
    _loaded[spec] = {"name": spec, "version": _version_of_module(spec)}
    log.debug(f"loaded plugin {spec} {_loaded[spec]['version']}".rstrip())


def _import_file(path: Path) -> None:
    path = path.resolve()
    key = str(path)
    if key in _loaded:
        return
    if not path.is_file():
        raise PluginError(f"plugin {path}: no such file")
    name = f"colorbench_plugin_{path.stem}_{hashlib.sha1(key.encode()).hexdigest()[:8]}"
    try:
        module_spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module
        module_spec.loader.exec_module(module)
    except Exception as err:  # noqa: BLE001 - any error of a plugin is reported, in one line
        sys.modules.pop(name, None)
        raise PluginError(f"plugin {path} failed to load: {_error_line(err)}") from None
    _loaded[key] = {"name": str(path), "sha256": sha256_of(path)}
    log.debug(f"loaded plugin {path} (sha256 {_loaded[key]['sha256']})")


def import_all(specs, base: str | Path | None = None) -> None:
    """:func:`import_plugin` for each of ``specs``, in order.

    Args:
        specs: module names or file paths.
        base: the folder relative file paths are relative to.
    """
    for spec in specs or ():
        import_plugin(str(spec), base)


def loaded() -> list[dict]:
    """What has been loaded so far, in order (``name`` with ``version`` or ``sha256``; entry points also name their
    ``group`` and ``entry_point``)."""
    return [dict(v) for v in _loaded.values()]


def describe() -> str:
    """The loaded plugins in one field of a results row: ``name==version`` or ``file@sha256:<hex>``, joined by
    ``;`` ('' without plugins)."""
    parts = []
    for p in _loaded.values():
        if "sha256" in p:
            parts.append(f"{p['name']}@sha256:{p['sha256']}")
        else:
            parts.append(f"{p['name']}=={p['version']}" if p.get("version") else p["name"])
    return ";".join(dict.fromkeys(parts))
