"""A vendor is one module: nothing outside providers/ names one in code, and the CLI's choices are the
registry's. (So adding a vendor is its module, its registry line and its contract test file.)"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import click

from gateway.cli import main
from providers import EVENT_PROVIDERS, PROVIDERS

GATEWAY = Path(__file__).resolve().parents[2] / "gateway"
VENDORS = re.compile(r"\b(" + "|".join(re.escape(key) for key in {*PROVIDERS, *EVENT_PROVIDERS}) + r")\b",
                     re.IGNORECASE)


def code_strings(path: Path) -> list[tuple[int, str]]:
    """Every string constant of the module but its docstrings (comments are not in the tree)."""
    tree = ast.parse(path.read_text())
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant)}
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings]


def test_no_code_outside_providers_names_a_vendor() -> None:
    named = [f"{path.relative_to(GATEWAY.parent)}:{line}: {text!r}"
             for path in sorted(GATEWAY.rglob("*.py")) for line, text in code_strings(path) if VENDORS.search(text)]
    assert named == []


def test_the_clis_vendor_choices_are_the_registrys() -> None:
    def choices(command: str, parameter: str) -> list[str]:
        found = next(p for p in main.commands[command].params if p.name == parameter)
        assert isinstance(found.type, click.Choice)
        return sorted(found.type.choices)

    assert choices("simulate", "provider") == sorted(PROVIDERS)
    assert choices("status", "provider") == choices("tail", "provider") == sorted(EVENT_PROVIDERS)
