"""The example agent of examples/, imported by path the way `langgraph dev` imports a graph file."""

from __future__ import annotations

import importlib.util
import sys

from tests.paths import REPO

EXAMPLE = REPO / "examples" / "solve_then_verify.py"


def load_example():
    """Import the example by path, the way `langgraph dev` imports a graph file."""
    name = "examples__solve_then_verify"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, EXAMPLE)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]
