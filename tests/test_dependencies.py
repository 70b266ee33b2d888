"""pyproject.toml declares what the code imports, and the code imports what it declares.

Every import of gateway/, providers/, harness/, tests/ and bench/ is read with ast and mapped to its
distribution through the installed metadata; the run-time code may use only the run-time list.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OWN = {"gateway", "providers", "harness", "tests", "bench"}
# Used without an import: a pytest plugin, type stubs, tools that scripts run, the transport that
# starlette.testclient loads, and the form parser it loads for bench/naive.py's tutorial-style baseline.
NOT_IMPORTED = {"anyio", "types-pyyaml", "asyncpg-stubs", "mypy", "ruff", "py-spy", "httpx2", "python-multipart"}


def declared(group: str | None = None) -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = project["dependencies"] if group is None else project["optional-dependencies"][group]
    return {normalize(re.split(r"[\[<>=!~; ]", spec, maxsplit=1)[0]) for spec in specs}


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def imported(*folders: str) -> set[str]:
    """The distributions that the modules under these folders import (the standard library left out)."""
    names: set[str] = set()
    for folder in folders:
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    names.update(alias.name.split(".")[0] for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    names.add(node.module.split(".")[0])
    distributions = packages_distributions()
    found: set[str] = set()
    for name in names - OWN - set(sys.stdlib_module_names):
        assert name in distributions, f"{name} is imported but not installed"
        found.update(normalize(d) for d in distributions[name])
    return found


def test_the_run_time_code_imports_only_run_time_dependencies() -> None:
    assert imported("gateway", "providers") - declared() == set()


def test_every_declared_dependency_is_used() -> None:
    everything = declared() | declared("test") | declared("bench")
    uses = imported("gateway", "providers", "harness", "tests", "bench") | {"uvicorn"}
    assert everything - uses - NOT_IMPORTED == set()


def test_the_tests_and_bench_import_only_what_is_declared() -> None:
    assert imported("harness", "tests", "bench") - declared() - declared("test") - declared("bench") == set()


def test_bench_does_not_import_the_tests() -> None:
    for path in (ROOT / "bench").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
            assert not any(m == "tests" or m.startswith("tests.") for m in modules), path
