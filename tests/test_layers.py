"""The import graph of bench/, models/ and losses/: no cycles, and every import runs down the floors of the house.

The graph is read from the source with ``ast`` (nothing is imported), so it sees every import, module-level or
inside a function, and a new module is checked as soon as its file exists. The rooms are folders; the floors (also
drawn in docs/architecture.md), from the ground up:

    8  bench (the commands: ablate, tune, report, evaluate, ... and cli, their one command-line layer)
    7  bench.grid        plan, engine, job run, run folder, study, tuned values, workers
    6  bench.training    loop, checkpoint, distributed
    5  bench.reporting   leaderboard, document, plots, samples, test-set tables
    4  bench.metrics  |  bench.config   (two rooms on one floor: neither imports the other)
    3  losses
    2  models
    1  bench.data        sources, loader, folds, colour, ab bins, controls
    0  bench.core        records, paths, device, startup, limits, log, plugins, tracking

A module imports its own room and rooms on lower floors only. ``bench`` itself (its ``__init__``) is the door: it
may import only ``bench.core``, so that ``models`` and ``losses`` can import ``bench.data`` without climbing. The
command modules do not import each other.
"""
from __future__ import annotations

import ast
from pathlib import Path


ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("bench", "models", "losses")

#: The floors of the house, from the ground up; each is a list of rooms (folders, or ``models``/``losses``).
FLOORS = (("bench.core",), ("bench.data",), ("models",), ("losses",), ("bench.metrics", "bench.config"),
          ("bench.reporting",), ("bench.training",), ("bench.grid",), ("bench",))
FLOOR = {room: i for i, rooms in enumerate(FLOORS) for room in rooms}
#: The stage folders of bench/ that ``ls bench`` shows.
STAGES = ("core", "data", "metrics", "config", "reporting", "training", "grid")


def room_of(module: str) -> str:
    """The room (the longest matching entry of FLOORS) of a module; ``bench`` itself counts as ``bench.core``."""
    if module == "bench":
        return "bench.core"
    rooms = [r for r in FLOOR if module == r or module.startswith(r + ".")]
    assert rooms, f"{module} is in no room of FLOORS: add its folder"
    return max(rooms, key=len)


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def discover() -> dict[str, Path]:
    """Every module of the three packages, by dotted name (``bench``, ``bench.training.loop`` ...)."""
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
    assert "bench.data.colour" in GRAPH["bench.training.loop"] and "bench.core.device" in GRAPH["bench.training.loop"]
    assert {"models", "losses"} <= GRAPH["bench.training.loop"]
    assert "bench.data.pipeline" in GRAPH["bench.throughput"]  # from bench.data import pipeline
    assert {"losses.mse", "losses.kl"} <= GRAPH["losses"]  # the registry imports every file of its folder
    assert "models.unet_vgg" in GRAPH["models"] and "models" not in GRAPH["models.unet_vgg"]
    assert {"bench.core", "bench.core.startup"} == GRAPH["bench"]  # the door imports only core


def test_cycle_finder_finds_a_planted_cycle():
    planted = {k: set(v) for k, v in GRAPH.items()}
    planted["bench.data.colour"].add("bench.training.loop")
    assert any(len(c) > 1 for c in strongly_connected(planted))


def test_no_import_cycles():
    cycles = [c for c in strongly_connected(GRAPH) if len(c) > 1]
    assert not cycles, f"modules that import each other (directly or through others): {cycles}"


def test_every_import_runs_down_the_floors():
    up = sorted(f"{a} -> {b}" for a, targets in GRAPH.items() for b in targets
                if room_of(a) != room_of(b) and FLOOR[room_of(b)] >= FLOOR[room_of(a)])
    assert not up, "imports that climb to the same floor or higher: " + "; ".join(up)


def test_the_floor_rule_finds_a_planted_climb():
    assert FLOOR[room_of("bench.grid.engine")] > FLOOR[room_of("bench.data.colour")]
    assert FLOOR[room_of("bench.metrics.stats")] == FLOOR[room_of("bench.config.cell")]  # one floor: a climb too


def test_bench_shows_its_stages():
    """``ls bench``: the stage folders, each a package whose ``__init__`` names its modules, and the commands."""
    for stage in STAGES:
        init = ROOT / "bench" / stage / "__init__.py"
        assert init.is_file(), f"bench/{stage}/ is no package"
        tree = ast.parse(init.read_text())
        listed = next(ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign)
                      and any(getattr(t, "id", "") == "__all__" for t in n.targets))
        assert sorted(listed) == sorted(p.stem for p in (ROOT / "bench" / stage).glob("*.py") if p.stem != "__init__")
        assert all(f"    {m}:" in ast.get_docstring(tree) for m in listed), f"bench/{stage}/__init__ names each module"
    loose = {p.stem for p in (ROOT / "bench").glob("*.py")} - {"__init__", "__main__", "cli"}
    mods = discover()
    assert all(is_command_line(mods[f"bench.{m}"]) for m in loose), "only commands (and cli) stay at the top of bench/"


def test_command_line_modules_do_not_import_each_other():
    mods = discover()
    cli = {name for name, path in mods.items() if is_command_line(path)}
    assert {"bench.ablate", "bench.throughput"} <= cli
    bad = {m: sorted(GRAPH[m] & cli) for m in sorted(cli) if GRAPH[m] & cli}
    assert not bad, f"command-line modules importing other command-line modules: {bad}"


#: The size limits of a unit in bench/ (lines from ``def``/``class`` to its end, docstring included).
MAX_FUNCTION_LINES, MAX_CLASS_LINES = 60, 200


def long_units(root: Path) -> list[str]:
    """The functions over ``MAX_FUNCTION_LINES`` and classes over ``MAX_CLASS_LINES`` lines under ``root``."""
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            limit = MAX_CLASS_LINES if isinstance(node, ast.ClassDef) else MAX_FUNCTION_LINES if isinstance(
                node, (ast.FunctionDef, ast.AsyncFunctionDef)) else None
            if limit is not None and node.end_lineno - node.lineno + 1 > limit:
                found.append(f"{path.relative_to(root)}:{node.lineno} {node.name} "
                             f"({node.end_lineno - node.lineno + 1} lines)")
    return found


def test_units_of_bench_are_short():
    assert not long_units(ROOT / "bench"), "split these: " + "; ".join(long_units(ROOT / "bench"))


def test_the_unit_check_finds_a_long_function(tmp_path):
    (tmp_path / "m.py").write_text("def f():\n" + "    x = 1\n" * MAX_FUNCTION_LINES + "\n\ndef g():\n    pass\n")
    assert [u.split(" ")[1] for u in long_units(tmp_path)] == ["f"]
