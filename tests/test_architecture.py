"""Import rules the layers keep, read from the source (ast), so a change that breaks one fails here:

1. Leaf modules (sources, range arithmetic, quality rules and charts, the outbound policy) import
   no model and no database layer: they are pure and testable without Django's ORM.
2. No module uses another app's private name (`_x`), whether imported or reached through a
   module alias (`collect._x`): what an app shares, it names publicly.
3. Services change models only through their public methods: no `obj._method(...)` call in a
   services module on anything but `self`/`cls`.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
APPS = ("collectors", "backfills", "quality", "config")
LEAVES = ["collectors/sources/__init__.py", "collectors/sources/binance.py", "collectors/sources/rss.py",
          "collectors/outbound.py", "collectors/times.py", "quality/rules.py", "quality/charts.py"]


def modules():
    for app in APPS:
        for path in sorted((ROOT / app).rglob("*.py")):
            if "migrations" not in path.parts:
                yield path.relative_to(ROOT).as_posix()


def imported_modules(tree) -> list[str]:
    names = []
    for node in ast.walk(tree):
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


@pytest.mark.parametrize("path", LEAVES)
def test_leaf_modules_import_no_model(path):
    assert model_imports((ROOT / path).read_text()) == []


@pytest.mark.parametrize("path", list(modules()))
def test_no_module_uses_another_apps_private_names(path):
    assert foreign_private_names((ROOT / path).read_text(), path.split("/")[0]) == []


@pytest.mark.parametrize("path", [p for p in modules() if p.endswith("services.py")])
def test_services_call_no_private_method_of_a_model(path):
    assert private_calls((ROOT / path).read_text()) == []


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
