"""The library reads as the pipeline: each layer of ``segunc/`` imports only the layers before it.

Every import of every module under ``segunc/`` is read with :mod:`ast` — module-level and
function-local, absolute and relative — and mapped to a layer by :data:`LAYERS` (the one place
the order is written down). The test fails on an import from a higher layer, on a module that
imports its own package back (registries live beside their base classes), on a cycle in the
module import graph, on a module that belongs to no layer, and when README's layout block does
not list the layers in this order.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "segunc"

#: layer order, bottom first; a module belongs to the layer of its longest matching prefix
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("settings", ("segunc.settings", "segunc.fsutil", "segunc.registry", "segunc._torch")),
    ("config", ("segunc.config", "segunc.presets")),
    ("data", ("segunc.data",)),
    ("backends", ("segunc.backends",)),
    ("modes", ("segunc.modes",)),
    ("uncertainty", ("segunc.uncertainty",)),
    ("fusion / refine", ("segunc.fusion", "segunc.refine")),
    ("postprocess", ("segunc.postprocess",)),
    ("metrics", ("segunc.metrics",)),
    ("pipeline", ("segunc.pipeline", "segunc.pipeline_upload", "segunc.temperature")),
    ("store", ("segunc.store",)),
    ("analysis", ("segunc.analysis",)),
    ("runner", ("segunc.runner",)),
    ("report", ("segunc.report", "segunc.viz")),
    ("tools", ("segunc.fetch", "segunc.bench", "segunc.crf_study")),
    ("cli / app", ("segunc.cli", "segunc.__main__", "segunc.access")),
]


def layer_of(module: str) -> int | None:
    """Index in :data:`LAYERS`; the package root ``segunc`` (version constants only) is below every layer."""
    if module == "segunc":
        return -1
    best, best_len = None, -1
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > best_len:
                best, best_len = i, len(p)
    return best


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def _resolve(base: str, name: str | None) -> str:
    return f"{base}.{name}" if name else base


def imports_of(module: str, path: Path) -> list[tuple[str, int, bool]]:
    """``(imported segunc module, line, function-local?)`` for every import in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    local_lines = {n.lineno for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                   for n in ast.walk(f) if isinstance(n, (ast.Import, ast.ImportFrom))}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base_name = _resolve(".".join(base), node.module)
            else:
                base_name = node.module or ""
            # `from pkg import sub` imports the module pkg.sub when it exists, else a name of pkg
            targets = [f"{base_name}.{a.name}" if f"{base_name}.{a.name}" in MODULES else base_name for a in node.names]
        else:
            continue
        for t in dict.fromkeys(targets):
            if t == "segunc" or t.startswith("segunc."):
                out.append((t, node.lineno, node.lineno in local_lines))
    return out


GRAPH = {m: imports_of(m, p) for m, p in MODULES.items()}


def test_every_module_has_a_layer():
    assert [m for m in MODULES if layer_of(m) is None] == []


def test_no_module_imports_a_higher_layer():
    bad = []
    for m, imports in GRAPH.items():
        if layer_of(m) is None:
            continue  # test_every_module_has_a_layer says so
        for target, line, local in imports:
            if layer_of(target) is None or layer_of(target) > layer_of(m):
                where = "function-local" if local else "module-level"
                bad.append(f"{MODULES[m].relative_to(ROOT)}:{line} ({LAYERS[layer_of(m)][0]}) imports {target} "
                           f"({LAYERS[layer_of(target)][0] if layer_of(target) is not None else 'no layer'}, {where})")
    assert bad == []


def test_no_module_imports_its_own_package_back():
    bad = [f"{m} imports {t} (line {line})" for m, imports in GRAPH.items() for t, line, _ in imports
           if t != "segunc" and m.startswith(t + ".") and MODULES[m].name != "__init__.py" and t == m.rpartition(".")[0]]
    assert bad == []


def test_import_graph_has_no_cycles():
    edges = {m: sorted({t for t, _, _ in imports if t in MODULES and t != m}) for m, imports in GRAPH.items()}
    state: dict[str, int] = {}
    cycles = []

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        stack.append(m)
        for t in edges[m]:
            if state.get(t) == 1:
                cycles.append(" -> ".join(stack[stack.index(t):] + [t]))
            elif t not in state:
                visit(t, stack)
        stack.pop()
        state[m] = 2

    for m in edges:
        if m not in state:
            visit(m, [])
    assert cycles == []


def test_the_checker_sees_local_relative_and_absolute_imports(tmp_path):
    """The walk catches the three spellings a violation can take (a checker that sees nothing passes everything)."""
    src = ("from .. import settings\nfrom ..cli.common import DEFAULTS\n"
           "def f():\n    import segunc.runner.jobs\n    from segunc.store import ResultStore\n")
    path = tmp_path / "probe.py"
    path.write_text(src)
    found = imports_of("segunc.data.probe", path)
    assert found == [("segunc.settings", 1, False), ("segunc.cli.common", 2, False), ("segunc.runner.jobs", 4, True),
                     ("segunc.store", 5, True)]
    assert [layer_of(t) > layer_of("segunc.data.probe") for t, _, _ in found] == [False, True, True, True]


def test_readme_layout_lists_the_layers_in_order():
    """README's layout block names every top-level module / package of segunc/, in layer order."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"each step imports only the ones before it:\s*```\n(.*?)```", text, re.S)
    assert block, "README.md lost its layout block"
    named = [f"segunc.{n}" for line in block.group(1).splitlines() for n in re.findall(r"segunc/(\w+)", line)]
    top = sorted({".".join(m.split(".")[:2]) for m in MODULES if m != "segunc"})
    assert sorted(set(named)) == top
    layers = [layer_of(n) for n in named]
    assert layers == sorted(layers), list(zip(named, layers))


def test_every_imported_segunc_module_exists():
    """A relative import left behind by a move (``from .viz import`` in a module that moved a level
    down) would sit in a lower layer by its prefix and pass the order check; it must not exist."""
    missing = [f"{MODULES[m].relative_to(ROOT)}:{line} imports {target}"
               for m, imports in GRAPH.items() for target, line, _ in imports
               if target != "segunc" and target not in MODULES]
    assert missing == []
