"""The package's layering: imports point down the layers and never back up, and no import cycle exists.

Read from the source with ``ast``, so lazy imports inside functions count too (they are still
dependencies: a lazy import only hides a cycle, it does not remove it).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PKG = SRC / "genmodels"

# Lower numbers are lower layers. A module may import its own layer's modules only where listed in SIDEWAYS.
LAYERS: dict[str, int] = {
    "genmodels": 0,  # the package's lazy __init__ (imports nothing at import time)
    "genmodels.errors": 0,
    "genmodels.config": 0,
    "genmodels.seeding": 0,
    "genmodels.device": 0,
    "genmodels.safeio": 0,
    "genmodels.data": 1,
    "genmodels.nets": 1,
    "genmodels.models": 2,
    "genmodels.checkpoints": 3,
    "genmodels.runs": 3,
    "genmodels.training": 4,
    "genmodels.eval": 4,
    "genmodels.viz": 4,
    "genmodels.serve": 5,
    "genmodels.api": 5,
    "genmodels.cli": 6,
    "genmodels.__main__": 6,
}
# Same-layer imports that are allowed: training and eval draw grids with viz; runs reads checkpoints;
# the base modules use the errors module; api (the public entry) joins training and the eval monitor.
SIDEWAYS = {
    ("genmodels.training", "genmodels.viz"),
    ("genmodels.eval", "genmodels.viz"),
    ("genmodels.runs", "genmodels.checkpoints"),
    ("genmodels.config", "genmodels.errors"),
    ("genmodels.device", "genmodels.errors"),
    ("genmodels.safeio", "genmodels.errors"),
    ("genmodels.__main__", "genmodels.cli"),
}


def _unit(module: str) -> str:
    """The layer unit a module belongs to: the longest LAYERS key that is it or a package above it."""
    parts = module.split(".")
    for i in range(len(parts), 0, -1):
        name = ".".join(parts[:i])
        if name in LAYERS:
            return name
    raise AssertionError(f"module {module} is in no layer; add it to LAYERS in {__file__}")


def _modules() -> dict[str, Path]:
    out = {}
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(SRC).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imports(module: str, path: Path, *, top_level_only: bool) -> set[str]:
    """The genmodels modules ``module`` imports (all of them, or only those run at import time)."""
    tree = ast.parse(path.read_text())
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    if top_level_only:  # imports in module-level if/try blocks run at import time too
        nodes = [
            n
            for top in tree.body
            if not isinstance(top, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
            for n in ast.walk(top)
        ]
        nodes += [
            n
            for top in tree.body
            if isinstance(top, ast.ClassDef)
            for n in top.body
            if isinstance(n, ast.Import | ast.ImportFrom)
        ]
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("genmodels"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if not mod.startswith("genmodels"):
                continue
            for a in node.names:  # ``from genmodels.models import base`` imports the submodule
                found.add(f"{mod}.{a.name}" if f"{mod}.{a.name}" in MODULES else mod)
    # A package's __init__ always runs before its submodules: an edge to one's own package is no dependency.
    ancestors = {".".join(module.split(".")[:i]) for i in range(1, len(module.split(".")) + 1)}
    return found - ancestors


MODULES = _modules()


def test_every_module_is_in_a_layer():
    for module in MODULES:
        assert _unit(module) in LAYERS, module  # _unit fails itself, naming the module, when none is


def test_imports_point_down_the_layers():
    bad = []
    for module, path in MODULES.items():
        src_unit = _unit(module)
        for target in _imports(module, path, top_level_only=False):
            dst_unit = _unit(target)
            if dst_unit == src_unit or dst_unit == "genmodels":
                continue
            if LAYERS[dst_unit] > LAYERS[src_unit] or (
                LAYERS[dst_unit] == LAYERS[src_unit] and (src_unit, dst_unit) not in SIDEWAYS
            ):
                bad.append(
                    f"{module} imports {target} ({src_unit} layer {LAYERS[src_unit]} -> {dst_unit} "
                    f"layer {LAYERS[dst_unit]})"
                )
    assert not bad, "imports against the layering:\n" + "\n".join(sorted(bad))


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of a directed graph as a list of nodes, or None (iterative DFS with colours)."""
    colour: dict[str, int] = {}
    for start in sorted(graph):
        if colour.get(start):
            continue
        stack = [(start, iter(sorted(graph.get(start, ()))))]
        path = [start]
        colour[start] = 1
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                colour[node] = 2
                stack.pop()
                path.pop()
            elif colour.get(child) == 1:
                return [*path[path.index(child) :], child]
            elif not colour.get(child):
                colour[child] = 1
                path.append(child)
                stack.append((child, iter(sorted(graph.get(child, ())))))
    return None


def test_no_import_cycle_between_layer_units():
    graph: dict[str, set[str]] = {}
    for module, path in MODULES.items():
        src = _unit(module)
        for target in _imports(module, path, top_level_only=False):
            dst = _unit(target)
            if dst not in (src, "genmodels"):
                graph.setdefault(src, set()).add(dst)
    assert _cycle(graph) is None, f"import cycle between parts of the package: {_cycle(graph)}"


def test_no_import_time_cycle_between_modules():
    graph = {m: {t for t in _imports(m, p, top_level_only=True) if t in MODULES} for m, p in MODULES.items()}
    # A package imports its own submodules in __init__; a submodule importing its package's other
    # submodules through the package is the usual shape, not a cycle worth flagging, unless it closes one.
    assert _cycle(graph) is None, f"import-time cycle: {' -> '.join(_cycle(graph) or [])}"


def test_the_cycle_finder_finds_cycles():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


@pytest.mark.parametrize("order", ["sorted", "reversed"])
def test_every_module_imports_in_any_order(order):
    """Every module imports in a fresh interpreter, leaves first and roots first (a circular import that
    only fails in one order would show here)."""
    mods = sorted(m for m in MODULES if not m.endswith("__main__"))
    if order == "reversed":
        mods.reverse()
    code = f"import importlib\nfor m in {mods!r}:\n    importlib.import_module(m)\n"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr.strip().splitlines()[-3:]


def test_no_capability_is_probed_with_getattr():
    """What a model can do is a declared Protocol (models/base.py) checked with isinstance: no
    ``getattr(model, "name", ...)``, ``hasattr(model, ...)`` or ``callable(getattr(...))`` probes anywhere."""
    import re

    probe = re.compile(r"""(getattr|hasattr)\([^,()]*model[^,()]*,\s*["']""")
    hits = [
        f"{path.relative_to(SRC)}:{i}: {line.strip()}"
        for path in PKG.rglob("*.py")
        for i, line in enumerate(path.read_text().splitlines(), 1)
        if probe.search(line)
    ]
    assert not hits, "capability probes:\n" + "\n".join(hits)
