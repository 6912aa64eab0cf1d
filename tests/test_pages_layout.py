"""The app's page files: shared helpers (``pages/_*.py``) never import a page, their imports form no
circle, and imports sit at module level (the one exception: Streamlit's legacy page manager, which
may be missing)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

PAGES = Path(__file__).resolve().parents[1] / "pages"
#: (file, imported module) pairs allowed inside a function
LOCAL_OK = {("_settings.py", "streamlit.runtime.pages_manager")}


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(module, inside a function) for every import in ``path``."""
    tree = ast.parse(path.read_text(), str(path))
    local = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
             for n in ast.walk(f) if isinstance(n, (ast.Import, ast.ImportFrom))}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.append((node.module, id(node) in local))
        elif isinstance(node, ast.Import):
            out += [(a.name, id(node) in local) for a in node.names]
    return out


def _page_modules() -> dict[str, list[tuple[str, bool]]]:
    return {p.stem: _imports(p) for p in sorted(PAGES.glob("*.py"))}


def test_helpers_import_no_page_and_form_no_circle():
    mods = _page_modules()
    graph = {name: {m.split(".", 1)[1] for m, _ in imps if m.startswith("pages.")} for name, imps in mods.items()}
    for name, deps in graph.items():
        if name.startswith("_"):
            assert all(d.startswith("_") for d in deps), f"pages/{name}.py imports a page: {deps}"
    state: dict[str, int] = {}

    def visit(n: str, path: list[str]) -> None:
        if state.get(n) == 1:
            raise AssertionError("import circle: " + " -> ".join(path + [n]))
        if state.get(n) == 2:
            return
        state[n] = 1
        for d in sorted(graph.get(n, ())):
            visit(d, path + [n])
        state[n] = 2

    for name in graph:
        visit(name, [])


def test_imports_are_at_module_level():
    local = [(f"{name}.py", m) for name, imps in _page_modules().items() for m, inside in imps if inside]
    assert [x for x in local if x not in LOCAL_OK] == []
