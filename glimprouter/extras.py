"""Which optional extra provides which package, and the one-line error a missing one gives.

The core install runs the graph, `glimprouter ask` and the chat model; everything else comes
with an extra of pyproject.toml. Each package below is imported only where a command needs it,
through `require`, and the CLI turns any other ModuleNotFoundError of these packages (one
imported by a library in between) into the same line.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from glimprouter.errors import ConfigError

# Top-level import name -> the extra of pyproject.toml that installs it.
EXTRA_OF: dict[str, str] = {
    "datasets": "evals",
    "math_verify": "evals",
    "scipy": "evals",
    "matplotlib": "evals",
    "psutil": "evals",
    "starlette": "serve",
    "uvicorn": "serve",
    "prometheus_client": "serve",
    "psycopg": "postgres",
    "psycopg_pool": "postgres",
    "langgraph.checkpoint.postgres": "postgres",
    "ray": "ray",
    "transformers": "local",
    "gguf": "local",
    "accelerate": "local",
}


def install_hint(extra: str) -> str:
    """The command that installs `extra`."""
    return f'pip install "glimprouter[{extra}]"'


class MissingExtra(ConfigError):
    """A package of an optional extra is not installed."""


def missing_extra(error: ModuleNotFoundError) -> MissingExtra | None:
    """The one-line error naming the extra that provides the module `error` could not import,
    or None when no extra provides it (a genuine bug, kept as a traceback)."""
    name = error.name or ""
    for module, extra in EXTRA_OF.items():
        if name == module or name.startswith(module + "."):
            return MissingExtra(f"{module} is not installed: {install_hint(extra)} (or [all])")
    return None


def require(module: str) -> ModuleType:
    """Import `module` (a package of an extra, or a module of ours that imports one), or raise
    the one-line error that names the extra to install."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as error:
        raise (missing_extra(error) or error) from None
