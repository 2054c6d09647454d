"""The import graph of bench/, models/ and losses/: no cycles, low layers import nothing above them, command-line
modules do not import each other.

The graph is read from the source with ``ast`` (nothing is imported), so it sees every import, module-level or
inside a function, and a new module is checked as soon as its file exists. The layers (also drawn in
docs/architecture.md):

    command line   bench.ablate, bench.tune, bench.report, bench.throughput, ... (a ``main()`` run as python -m)
        │  may import anything below, never another command-line module
    middle         bench.train, bench.config, bench.metrics, bench.plots, bench.leaderboard, bench.study, ...
        │
    models/, losses/ (registries and their families)
        │
    low            bench.colour, bench.abbins, bench.data, bench.controls, bench.records, bench.stats, bench.log,
                   bench.plugins, bench.device, bench.distributed, bench.tracking, bench.optuna_compat (import only
                   each other, torch, numpy, optuna and the like)
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("bench", "models", "losses")

#: The low layer: the modules everything else stands on. They may import each other, never anything else of ours.
LOW = {"bench.colour", "bench.abbins", "bench.data", "bench.records", "bench.stats", "bench.device",
       "bench.distributed", "bench.metrictable", "bench.controls", "bench.limits", "bench.plugins", "bench.log",
       "bench.tracking", "bench.optuna_compat"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def discover() -> dict[str, Path]:
    """Every module of the three packages, by dotted name (``bench``, ``bench.train`` ...)."""
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            out[_module_name(path)] = path
    return out


def _is_package(name: str, mods: dict[str, Path]) -> bool:
    return mods[name].name == "__init__.py"


def _resolve(importer: str, node: ast.ImportFrom, mods: dict[str, Path]) -> str:
    """The absolute module name of a ``from X import ...`` (relative levels resolved)."""
    if not node.level:
        return node.module or ""
    base = importer.split(".")
    if not _is_package(importer, mods):
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _targets(importer: str, tree: ast.AST, mods: dict[str, Path]) -> set[str]:
    """Our modules that ``importer`` imports anywhere in its source."""
    found: set[str] = set()

    def add(name: str) -> None:
        # importing a.b.c runs a and a.b first; a package's own modules do not count its __init__ (it is already
        # being imported when they run)
        parts = name.split(".")
        for i in range(1, len(parts) + 1):
            prefix = ".".join(parts[:i])
            if prefix in mods and prefix != importer and not (importer + ".").startswith(prefix + "."):
                found.add(prefix)

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                add(a.name)
        elif isinstance(node, ast.ImportFrom):
            mod = _resolve(importer, node, mods)
            add(mod)
            for a in node.names:  # from pkg import submodule
                if f"{mod}.{a.name}" in mods:
                    add(f"{mod}.{a.name}")
        elif isinstance(node, ast.Call):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
            if name == "import_module" and node.args and isinstance(node.args[0], ast.Constant):
                add(str(node.args[0].value))
            # a registry package importing all its files: ``for m in pkgutil.iter_modules(__path__): import_module``
            if name == "iter_modules" and _is_package(importer, mods):
                found.update(m for m in mods if m.startswith(importer + ".") and m.count(".") == importer.count(".") + 1)
    found.discard(importer)
    return found


def import_graph() -> dict[str, set[str]]:
    """Module → the set of our modules it imports."""
    mods = discover()
    return {name: _targets(name, ast.parse(path.read_text(), str(path)), mods) for name, path in mods.items()}


def is_command_line(path: Path) -> bool:
    """A command-line module: a top-level ``main()`` and an ``if __name__ == "__main__"`` block."""
    tree = ast.parse(path.read_text())
    has_main = any(isinstance(n, ast.FunctionDef) and n.name == "main" for n in tree.body)
    guarded = any(isinstance(n, ast.If) and "__main__" in ast.unparse(n.test) for n in tree.body)
    return has_main and guarded


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm: the strongly connected components of the graph."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


GRAPH = import_graph()


def test_the_graph_is_read_right():
    """The reader sees relative, absolute, function-level and registry imports (known edges of this code)."""
    assert "bench.colour" in GRAPH["bench.train"] and "bench.device" in GRAPH["bench.train"]
    assert {"models", "losses"} <= GRAPH["bench.train"]
    assert "bench.pipeline" in GRAPH["bench.throughput"]  # from . import cli, pipeline
    assert {"losses.mse", "losses.kl"} <= GRAPH["losses"]  # the registry imports every file of its folder
    assert "models.unet_vgg" in GRAPH["models"] and "models" not in GRAPH["models.unet_vgg"]
    assert set(LOW) <= set(GRAPH), "a low-layer module was renamed: update LOW"


def test_cycle_finder_finds_a_planted_cycle():
    planted = {k: set(v) for k, v in GRAPH.items()}
    planted["bench.colour"].add("bench.train")
    assert any(len(c) > 1 for c in strongly_connected(planted))


def test_no_import_cycles():
    cycles = [c for c in strongly_connected(GRAPH) if len(c) > 1]
    assert not cycles, f"modules that import each other (directly or through others): {cycles}"


@pytest.mark.parametrize("module", sorted(LOW))
def test_low_layer_imports_nothing_above_it(module):
    above = sorted(GRAPH[module] - LOW)
    assert not above, f"{module} is in the low layer but imports {above}"


def test_command_line_modules_do_not_import_each_other():
    mods = discover()
    cli = {name for name, path in mods.items() if is_command_line(path)}
    assert {"bench.ablate", "bench.throughput"} <= cli
    bad = {m: sorted(GRAPH[m] & cli) for m in sorted(cli) if GRAPH[m] & cli}
    assert not bad, f"command-line modules importing other command-line modules: {bad}"
