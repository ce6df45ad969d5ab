"""Running the notebooks the way a user does: each in a fresh kernel of this interpreter (nbclient),
configured through GLIMPROUTER_* environment variables; code cells are tagged with their id,
so checks find a cell's outputs by tag rather than by position."""

from __future__ import annotations

import base64
import os
import struct

import nbformat
import pytest
from ipykernel.kernelspec import write_kernel_spec
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from jupyter_core.utils import run_sync
from nbclient import NotebookClient

from tests.paths import REPO

NOTEBOOKS = REPO / "notebooks"


CELL_TIMEOUT_S = 300


KERNEL = "glimprouter-test"


# Budgets small enough for SmolLM2-135M on one CPU core (a few tokens per second).
TINY_BUDGET = {
    "GLIMPROUTER_STEP_MAX_TOKENS": "16",
    "GLIMPROUTER_TOKEN_BUDGET": "48",
    "GLIMPROUTER_ANSWER_MAX_TOKENS": "16",
    "GLIMPROUTER_SEED": "0",
}


@pytest.fixture(scope="session")
def kernels(tmp_path_factory) -> KernelSpecManager:
    """Kernel specs holding one spec: this interpreter, whatever the machine has installed."""
    directory = tmp_path_factory.mktemp("kernels")
    write_kernel_spec(directory / KERNEL)  # argv: [sys.executable, -m, ipykernel_launcher, ...]
    return KernelSpecManager(kernel_dirs=[str(directory)], ensure_native_kernel=False)


def run_notebook(
    name: str, env: dict[str, str], kernels: KernelSpecManager
) -> nbformat.NotebookNode:
    """notebooks/NAME.ipynb executed from its folder with the GLIMPROUTER_* settings `env`."""
    path = NOTEBOOKS / f"{name}.ipynb"
    stored = path.read_bytes()
    notebook = nbformat.reads(stored.decode(), as_version=4)
    execute(notebook, env, kernels)
    assert path.read_bytes() == stored, f"{path.name} rewritten: only store_notebooks.py writes it"
    return notebook


def execute(
    notebook: nbformat.NotebookNode, env: dict[str, str], kernels: KernelSpecManager
) -> None:
    """Run every cell in place; raises CellExecutionError at a failing cell, the outputs up to
    there kept in `notebook`. The kernel is shut down either way (nbclient leaves a kernel
    manager it was handed running). The stored outputs are cleared first, so that what
    `notebook` holds afterwards is this run's alone."""
    for code_cell in (c for c in notebook.cells if c.cell_type == "code"):
        code_cell.outputs, code_cell.execution_count = [], None
    kernel = AsyncKernelManager(kernel_name=KERNEL, kernel_spec_manager=kernels)
    try:
        NotebookClient(
            notebook,
            km=kernel,
            timeout=CELL_TIMEOUT_S,
            resources={"metadata": {"path": str(NOTEBOOKS)}},
        ).execute(env=kernel_env(env))
    finally:
        if run_sync(kernel.is_alive)():
            run_sync(kernel.shutdown_kernel)(now=True)


def kernel_env(settings: dict[str, str]) -> dict[str, str]:
    """This process's environment without GLIMPROUTER_* settings or a non-inline matplotlib
    backend, plus `settings`."""
    inherited = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("GLIMPROUTER_") and key != "MPLBACKEND"
    }
    return inherited | settings


def server_env(url: str) -> dict[str, str]:
    return {
        "GLIMPROUTER_SMALL_BASE_URL": url,
        "GLIMPROUTER_LARGE_BASE_URL": url,
        "GLIMPROUTER_SMALL_MODEL": "small",
        "GLIMPROUTER_LARGE_MODEL": "large",
        **TINY_BUDGET,
    }


def cell(notebook: nbformat.NotebookNode, tag: str) -> nbformat.NotebookNode:
    (found,) = [c for c in notebook.cells if tag in c.metadata.get("tags", [])]
    return found


def stdout(code_cell: nbformat.NotebookNode) -> str:
    return "".join(o.text for o in code_cell.outputs if o.get("name") == "stdout")


def shown(code_cell: nbformat.NotebookNode, mime: str) -> list[str]:
    return [o.data[mime] for o in code_cell.outputs if mime in o.get("data", {})]


def png_size(shown_png: str) -> tuple[int, int]:
    """Width and height of a PNG a cell showed (base64, as a notebook keeps it); fails on
    anything but a PNG."""
    data = base64.b64decode(shown_png)
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", "not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def table(markdown_text: str) -> list[list[str]]:
    """The body rows of a markdown table, cells stripped."""
    rows = [line.strip().strip("|").split(" | ") for line in markdown_text.splitlines()]
    return [[c.strip() for c in row] for row in rows[2:]]
