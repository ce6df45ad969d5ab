"""What examples/ and notebooks/ use of glimprouter is its public API: they import only names
`glimprouter` exports, and every exported name resolves."""

from __future__ import annotations

import ast
import json

import glimprouter
from tests.paths import REPO

ROOT = REPO


def sources() -> dict[str, str]:
    """The Python of every example file and of every notebook's code cells."""
    found = {
        str(path.relative_to(ROOT)): path.read_text() for path in ROOT.glob("examples/**/*.py")
    }
    for notebook in ROOT.glob("notebooks/*.ipynb"):
        cells = json.loads(notebook.read_text())["cells"]
        code = ["".join(cell["source"]) for cell in cells if cell["cell_type"] == "code"]
        # IPython magics and shell escapes are not Python.
        lines = [line for cell in code for line in cell.splitlines()]
        found[str(notebook.relative_to(ROOT))] = "\n".join(
            line for line in lines if not line.lstrip().startswith(("%", "!"))
        )
    return found


def glimprouter_imports(source: str) -> list[tuple[str, str | None]]:
    """(module, name) of each import from glimprouter or one of its modules."""
    imports = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("glimprouter"):
            imports += [(node.module, alias.name) for alias in node.names]
        elif isinstance(node, ast.Import):
            imports += [(a.name, None) for a in node.names if a.name.startswith("glimprouter.")]
    return imports


def test_examples_and_notebooks_import_only_public_names():
    found = sources()
    assert "examples/strategies/hysteresis.py" in found and "notebooks/analysis.ipynb" in found
    private = {
        path: [(module, name) for module, name in glimprouter_imports(source)
               if module != "glimprouter" or name not in glimprouter.__all__]
        for path, source in found.items()
    }  # fmt: skip
    assert {path: names for path, names in private.items() if names} == {}


def test_every_exported_name_resolves():
    assert all(getattr(glimprouter, name) is not None for name in glimprouter.__all__)
