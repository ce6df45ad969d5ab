"""The package's imports go one way: settings and state at the bottom, surfaces at the top, and
no module imports another that (directly or not) imports it back.

Every import counts, at module level or inside a function: a deferred import still ties the two
modules together, it only hides the tie from whoever reads the top of the file.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from tests.paths import REPO

PACKAGE = REPO / "glimprouter"

# The one table to update when a module is added, moved or renamed: each module belongs to the
# layer of the longest prefix (a module or a package) that names it. Bottom first; a module may
# import its own layer and the ones below it, never one above.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "settings, state and pure logic",
        (
            "glimprouter.errors",
            "glimprouter.extras",  # which extra a lazily imported package comes with
            "glimprouter.graph.settings",  # setting(...), the tables derived from it, env parsing
            "glimprouter.graph.context",
            "glimprouter.graph.state",
            "glimprouter.scoring",
            "glimprouter.prompts",
            "glimprouter.parsing",
            "glimprouter.continuation",
            "glimprouter.strategies",  # below the settings, which take their names from it
            "glimprouter.stopping",
        ),
    ),
    (
        "the model client",
        ("glimprouter.model_servers",),
    ),
    ("the nodes", ("glimprouter.nodes",)),
    # builder, invoke and threads; the package's context and state sit at the bottom (above).
    ("the graph", ("glimprouter.graph",)),
    (
        "surfaces",
        (
            "glimprouter",  # the public API re-exports the graph
            "glimprouter.live_view",
            "glimprouter.context_flags",
            "glimprouter.ask",
            "glimprouter.threads_command",
            "glimprouter.cli",
            "glimprouter.endpoint",
            "glimprouter.evals",
            "glimprouter.vllm_launcher",
        ),
    ),
)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imported_modules(module: str) -> Iterator[str]:
    """The package's modules that `module` imports, anywhere in its body."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            # `from package import name` imports the submodule `name` when there is one.
            names = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base
                for alias in node.names
            ]
        else:
            continue
        yield from (name for name in names if name in MODULES and name != module)


IMPORTS = {module: set(imported_modules(module)) for module in MODULES}


def layer_of(module: str) -> int:
    """Index in LAYERS of the longest prefix naming `module`."""
    matches = [
        (len(prefix), index)
        for index, (_, prefixes) in enumerate(LAYERS)
        for prefix in prefixes
        if module == prefix or module.startswith(prefix + ".")
    ]
    assert matches, f"{module} is in no layer: add it to LAYERS in tests/unit/test_layers.py"
    return max(matches)[1]


def import_cycles() -> list[frozenset[str]]:
    """The strongly connected groups of two or more modules (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[frozenset[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in sorted(IMPORTS[module]):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            group = set()
            while (member := stack.pop()) not in group:
                on_stack.discard(member)
                group.add(member)
                if member == module:
                    break
            if len(group) > 1:
                groups.append(frozenset(group))

    for module in sorted(MODULES):
        if module not in index:
            visit(module)
    return groups


def test_the_walk_sees_every_kind_of_import():
    step = IMPORTS["glimprouter.nodes.step"]
    assert "glimprouter.model_servers.client" in step  # from x import y
    assert "glimprouter.graph.builder" in IMPORTS["glimprouter.evals.solve"]
    launcher = IMPORTS["glimprouter.vllm_launcher.command"]
    assert "glimprouter.vllm_launcher.model_files" in launcher  # from package import submodule


def test_every_module_has_a_layer():
    for module in MODULES:
        layer_of(module)


def test_no_import_cycles():
    cycles = [sorted(group) for group in import_cycles()]
    assert cycles == [], f"modules that import each other: {cycles}"


def test_lower_layers_never_import_higher_ones():
    upward = [
        f"{module} ({LAYERS[layer_of(module)][0]}) imports {imported} "
        f"({LAYERS[layer_of(imported)][0]})"
        for module, imported_set in sorted(IMPORTS.items())
        for imported in sorted(imported_set)
        if layer_of(imported) > layer_of(module)
    ]
    assert upward == [], "\n".join(upward)
