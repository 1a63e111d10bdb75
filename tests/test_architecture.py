"""Import rules the layers keep, read from the source (ast), so a change that breaks one fails here:

1. Leaf modules (sources, range arithmetic, quality rules and charts, the outbound policy) import
   no model and no database layer: they are pure and testable without Django's ORM.
2. No module uses another app's private name (`_x`), whether imported or reached through a
   module alias (`collect._x`): what an app shares, it names publicly.
3. Services change models only through their public methods: no `obj._method(...)` call in a
   services module on anything but `self`/`cls`.
4. Imports sit at the top of a module; one inside a function says why in a comment (on its line,
   or the comment line(s) just above its import block).
5. Every module sits in one layer of LAYERS (leaves, base, models, data, engine, services,
   plumbing, interfaces) and imports only its own layer and earlier ones; the modules form a
   DAG (module-level imports and uncommented local ones: a commented local import is the
   declared way out of a cycle; `if TYPE_CHECKING:` imports never run). The pure leaves
   (`config.errors`, `collectors.times`) import nothing of Django.
"""

import ast
from fnmatch import fnmatch
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
APPS = ("collectors", "backfills", "quality", "config")
LEAVES = ["collectors/sources/__init__.py", "collectors/sources/binance.py", "collectors/sources/rss.py",
          "collectors/outbound.py", "collectors/times.py", "quality/rules.py", "quality/charts.py",
          "config/errors.py"]
PURE = ["collectors/times.py", "config/errors.py"]  # not even Django


def modules():
    for app in APPS:
        for path in sorted((ROOT / app).rglob("*.py")):
            if "migrations" not in path.parts:
                yield path.relative_to(ROOT).as_posix()


def type_checking_only(tree) -> set[int]:
    """Line numbers of imports inside `if TYPE_CHECKING:` (never run: annotations only)."""
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test).endswith("TYPE_CHECKING"):
            lines.update(sub.lineno for stmt in node.body for sub in ast.walk(stmt)
                         if isinstance(sub, (ast.Import, ast.ImportFrom)))
    return lines


def imported_modules(tree) -> list[str]:
    names = []
    skip = type_checking_only(tree)
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names += [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
    return names


def model_imports(source: str) -> list[str]:
    """The imports of a module that reach a models module or the database layer."""
    return [name for name in imported_modules(ast.parse(source))
            if ".models" in f".{name}" or name.startswith(("django.db", "django_q.models"))]


def foreign_private_names(source: str, app: str) -> list[str]:
    """`from other_app.m import _x`, and `alias._x` where alias is a module of another app."""
    tree = ast.parse(source)
    aliases, found = {}, []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in APPS:
            other = node.module.split(".")[0] != app
            for alias in node.names:
                if other and alias.name.startswith("_"):
                    found.append(f"from {node.module} import {alias.name}")
                aliases[alias.asname or alias.name] = (node.module.split(".")[0], f"{node.module}.{alias.name}")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in APPS:
                    aliases[alias.asname or alias.name] = (alias.name.split(".")[0], alias.name)
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.attr.startswith("_")
                and not node.attr.startswith("__") and node.value.id in aliases
                and aliases[node.value.id][0] != app):
            found.append(ast.unparse(node))
    return found


def private_calls(source: str) -> list[str]:
    """Calls of `obj._method(...)` on anything but self, cls or super()."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            attr, owner = node.func.attr, node.func.value
            if not attr.startswith("_") or attr.startswith("__"):
                continue
            if isinstance(owner, ast.Name) and owner.id in ("self", "cls"):
                continue
            if isinstance(owner, ast.Call) and getattr(owner.func, "id", None) == "super":
                continue
            found.append(ast.unparse(node.func))
    return found


def module_name(path: str) -> str:
    name = path.removesuffix(".py").replace("/", ".")
    return name.removesuffix(".__init__")


def local_imports(source: str) -> list[tuple[int, str, bool]]:
    """(line, module, has a reason) of each import inside a function."""
    lines = source.splitlines()
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for sub in ast.walk(node):
                if isinstance(sub, (ast.Import, ast.ImportFrom)):
                    found.append((sub.lineno, imported_modules(ast.Module([sub], []))[0],
                                  _has_reason(lines, sub.lineno - 1)))
    return found


def _has_reason(lines: list[str], index: int) -> bool:
    """A comment on the import's line, or above the block of imports it belongs to."""
    if "#" in lines[index]:
        return True
    index -= 1
    while index >= 0 and (lines[index].strip().startswith(("from ", "import ")) or not lines[index].strip()):
        index -= 1
    return index >= 0 and lines[index].strip().startswith("#")


def import_graph() -> dict[str, set[str]]:
    """Module -> the project's modules it imports at module level or, without a reason, locally."""
    names = {module_name(p): p for p in modules()}

    def resolve(name):
        while name and name not in names:
            name = name.rpartition(".")[0]
        return name

    graph = {}
    for name, path in names.items():
        source = (ROOT / path).read_text()
        tree = ast.parse(source)
        local = {line for line, _, reason in local_imports(source) if reason} | type_checking_only(tree)
        deps = set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)) and node.lineno not in local:
                deps.update(filter(None, (resolve(m) for m in imported_modules(ast.Module([node], [])))))
        graph[name] = deps - {name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
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
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


# Every module of the project in one layer, in the order they may import one another: a module
# imports only modules of its own layer or of layers before it (docs/architecture.md).
LAYERS = [
    ("leaves", ["config.errors", "collectors.times", "collectors.sources", "collectors.sources.*",
                "collectors.outbound", "collectors.fields", "quality.rules", "quality.charts",
                "collectors.emulator", "collectors.emulator.*", "config.logging", "config.settings",
                "config.security", "config.negotiation", "config.parsers", "collectors", "backfills",
                "quality", "config", "*.management", "*.management.commands"]),
    ("base", ["collectors.db", "collectors.storage"]),
    ("models", ["*.models"]),
    ("data", ["collectors.http", "collectors.alerts", "collectors.metrics", "collectors.operations",
              "backfills.gaps", "config.health", "config.schedules"]),
    ("engine", ["collectors.engine"]),
    ("services", ["*.services"]),
    ("plumbing", ["config.api", "config.admin", "collectors.auth"]),
    ("interfaces", ["*.api", "*.admin", "*.tasks", "*.management.commands.*", "collectors.bench",
                    "config.urls", "config.views", "config.wsgi", "*.apps"]),
]


def layer(name: str) -> int | None:
    """The index in LAYERS of the module's layer (the first that names it), or None."""
    for rank, (_, patterns) in enumerate(LAYERS):
        if any(fnmatch(name, pattern) for pattern in patterns):
            return rank
    return None


def upward_imports(graph) -> list[str]:
    """Imports of a module from a later layer (or from a module in no layer)."""
    return [f"{a} -> {b}" for a, deps in sorted(graph.items()) for b in sorted(deps)
            if layer(a) is not None and (layer(b) is None or layer(b) > layer(a))]


@pytest.mark.parametrize("path", LEAVES)
def test_leaf_modules_import_no_model(path):
    assert model_imports((ROOT / path).read_text()) == []


@pytest.mark.parametrize("path", list(modules()))
def test_no_module_uses_another_apps_private_names(path):
    assert foreign_private_names((ROOT / path).read_text(), path.split("/")[0]) == []


@pytest.mark.parametrize("path", [p for p in modules() if p.endswith("services.py")])
def test_services_call_no_private_method_of_a_model(path):
    assert private_calls((ROOT / path).read_text()) == []


@pytest.mark.parametrize("path", list(modules()) + sorted(
    p.relative_to(ROOT).as_posix() for p in (ROOT / "tests").rglob("*.py")))
def test_imports_inside_functions_say_why(path):
    assert [f"line {line}: {name}" for line, name, reason in local_imports((ROOT / path).read_text())
            if not reason] == []


@pytest.mark.parametrize("path", PURE)
def test_pure_leaves_import_nothing_of_django(path):
    assert [m for m in imported_modules(ast.parse((ROOT / path).read_text()))
            if m.split(".")[0] in ("django", "rest_framework", "django_q", *APPS)] == []


def test_every_module_has_a_layer():
    assert [name for name in map(module_name, modules()) if layer(name) is None] == []


def test_the_modules_form_a_dag_whose_layers_point_one_way():
    graph = import_graph()
    assert "collectors.engine" in graph["backfills.services"]  # the graph is read at all
    assert cycles(graph) == []
    assert upward_imports(graph) == []


def test_the_rules_catch_what_they_are_for():
    # The checks above pass on clean code only if they can fail: each meets one violation.
    assert model_imports("from collectors.models import Candle\n") == ["collectors.models",
                                                                       "collectors.models.Candle"]
    assert model_imports("def f():\n    from django.db import connection\n")
    assert foreign_private_names("from collectors import services as collect\ncollect._plan()\n",
                                 "backfills") == ["collect._plan"]
    assert foreign_private_names("from collectors.services import _plan\n", "quality") == [
        "from collectors.services import _plan"]
    assert foreign_private_names("from collectors import services\nservices._plan()\n", "collectors") == []
    assert private_calls("job._transition([1], status=2)\nself._ok()\n") == ["job._transition"]
    # A local import without a reason, one with a comment above its block, one on its line.
    assert [r for _, _, r in local_imports(
        "def f():\n    import os\n\n"
        "def g():\n    # the models are not loaded yet\n    import os\n    import sys\n\n"
        "def h():\n    import os  # optional dependency\n")] == [False, True, True, True]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert upward_imports({"collectors.models": {"collectors.services"},
                           "collectors.services": {"collectors.engine", "collectors.models"}}) == [
        "collectors.models -> collectors.services"]
    assert upward_imports({"collectors.sources.binance": {"collectors.http"}}) == [
        "collectors.sources.binance -> collectors.http"]  # a leaf reaching the HTTP wrapper
    assert layer("backfills.management.commands.bench_gaps") == len(LAYERS) - 1
    assert layer("collectors.times") == 0 and layer("collectors.newthing") is None
    assert imported_modules(ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                      "    from collectors.http import Upstream\n")) == [
        "typing", "typing.TYPE_CHECKING"]
