"""The code's layout is the data path: signal → model → results, with the nightly job,
the live server and the dashboard around them. These rules keep it so."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# package -> its folder in the repository (see pyproject's package-dir)
FOLDERS = {"signal": "callmood/signal", "model": "callmood/model",
           "results": "callmood/results", "batch": "batch", "live": "live",
           "dashboard": "dashboard", "training": "training"}
# what each package may import of the others (itself always)
ALLOWED = {
    "signal": set(),
    "model": {"signal"},
    "results": set(),
    "batch": {"signal", "model", "results"},
    "live": {"signal", "model", "results"},
    "dashboard": {"results"},
    "training": {"signal", "model", "results"},
}


def imported_packages(path: Path) -> set[str]:
    """The callmood packages a module imports at run time (a TYPE_CHECKING block names
    types only)."""
    found = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            return
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            names = []
        for name in names:
            parts = name.split(".")
            if parts[0] == "callmood" and len(parts) > 1 and parts[1] in FOLDERS:
                found.add(parts[1])
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return found


def test_each_package_imports_only_what_sits_below_it_on_the_data_path():
    broken = []
    for package, folder in FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            for other in imported_packages(path) - ALLOWED[package] - {package}:
                broken.append(f"{path.relative_to(ROOT)} imports callmood.{other}")
    assert not broken, "\n".join(broken)


def test_the_rules_see_imports_inside_functions(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from callmood.training import train\n"
                      "from typing import TYPE_CHECKING\n"
                      "if TYPE_CHECKING:\n    from callmood.model.folder import LoadedModel\n")
    assert imported_packages(module) == {"training"}
