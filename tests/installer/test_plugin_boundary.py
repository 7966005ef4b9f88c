"""Plugin files import only the standard library, OpenAlgo's own packages, the three
OpenAlgo modules the host reproduces, and each other (docs/design.md, "What the plugin may
import")."""

import ast
import sys
from pathlib import Path

import pytest

from install.manifest import ALLOWED_OPENALGO_MODULES, ALLOWED_PACKAGES, PLUGIN_FILES

ROOT = Path(__file__).resolve().parents[2]
PYTHON_FILES = [path for path in PLUGIN_FILES if path.endswith(".py")]
PLUGIN_MODULES = {path[:-3].replace("/", ".").removesuffix(".__init__") for path in PYTHON_FILES}
#: Where the plugin lives: its public faces by name, the rest in folders of its own.
PLUGIN_FOLDERS = (
    "database/order_queue",
    "services/order_queue",
    "templates/order_queue",
    "static/order_queue",
)
PROJECT_PACKAGES = {"database", "services", "blueprints", "utils"}


# Imported inside functions only: psycopg when PostgreSQL is configured; eventlet and
# gevent when they already run the process (database/order_queue/green.py), as in OpenAlgo's image.
LAZY_ONLY = {"psycopg", "eventlet", "gevent"}


def module_level_nodes(tree):
    """Every node not inside a function body."""
    stack = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        yield node
        stack.extend(ast.iter_child_nodes(node))


def imported_modules(path: Path, nodes=None) -> set[str]:
    names = set()
    for node in nodes if nodes is not None else ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            if node.module in PROJECT_PACKAGES:  # "from database import x" imports database.x
                names.update(f"{node.module}.{alias.name}" for alias in node.names)
            else:
                names.add(node.module)
    return names


def allowed(module: str, lazy_ok: bool = True) -> bool:
    top = module.split(".")[0]
    if top in LAZY_ONLY:
        return lazy_ok
    return (
        top in sys.stdlib_module_names
        or top in ALLOWED_PACKAGES
        or module in ALLOWED_OPENALGO_MODULES
        or module in PLUGIN_MODULES
        or module == "__future__"
    )


@pytest.mark.parametrize("relative", PYTHON_FILES)
def test_plugin_file_imports_only_what_openalgo_has(relative):
    path = ROOT / relative
    assert path.exists(), relative
    bad = sorted(m for m in imported_modules(path) if not allowed(m))
    assert bad == [], f"{relative} imports {bad}"
    eager = imported_modules(path, module_level_nodes(ast.parse(path.read_text())))
    assert not {m.split(".")[0] for m in eager} & LAZY_ONLY, (
        f"{relative} imports {LAZY_ONLY} eagerly"
    )


def test_the_manifest_lists_every_file_of_the_plugin_and_nothing_else():
    faces = {str(p.relative_to(ROOT)) for p in ROOT.glob("*/order_queue*.py")}
    inside = {
        str(p.relative_to(ROOT))
        for folder in PLUGIN_FOLDERS
        for p in (ROOT / folder).rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    assert faces | inside == set(PLUGIN_FILES)


def test_host_binds_queue_order_with_the_upstream_signature():
    import inspect

    from blueprints import strategy

    assert list(inspect.signature(strategy.queue_order).parameters) == ["endpoint", "payload"]


def test_the_plugin_has_no_import_circles():
    """Storage imports nothing of the services, services import storage modules (not
    the face), and nothing imports the runtime back: no circle, counting imports made
    inside functions too (docs/design.md, "Layers")."""
    modules = {
        path[:-3].replace("/", ".").removesuffix(".__init__"): path
        for path in PLUGIN_FILES
        if path.endswith(".py")
    }
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        named = set()
        for node in ast.walk(ast.parse((ROOT / path).read_text())):
            if isinstance(node, ast.Import):
                named.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                named.add(node.module)  # and "from package import module":
                named.update(f"{node.module}.{alias.name}" for alias in node.names)
        graph[module] = {m for m in named if m in modules and m != module}

    def reachable(start: str) -> set[str]:
        seen, todo = set(), list(graph[start])
        while todo:
            module = todo.pop()
            if module not in seen:
                seen.add(module)
                todo.extend(graph[module])
        return seen

    circular = sorted(m for m in graph if m in reachable(m))
    assert circular == [], circular
