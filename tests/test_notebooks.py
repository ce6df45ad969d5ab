"""The notebooks as stored, and the way the tests run them (tests/vllm/test_notebooks.py runs them
top to bottom against the real vLLM server and checks they show what they promise).

Each notebook runs in a fresh kernel of this interpreter (nbclient), configured the way a user
configures it: through GLIMPROUTER_* environment variables. Code cells are tagged with their id,
so the checks find a cell's outputs by tag rather than by position.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import nbformat
import pytest
from ipykernel.kernelspec import write_kernel_spec
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from jupyter_core.utils import run_sync
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from glimprouter.vllm_launcher.command import free_port

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
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


def table(markdown_text: str) -> list[list[str]]:
    """The body rows of a markdown table, cells stripped."""
    rows = [line.strip().strip("|").split(" | ") for line in markdown_text.splitlines()]
    return [[c.strip() for c in row] for row in rows[2:]]


def test_notebooks_are_stored_with_the_outputs_of_a_real_run():
    """A reader on GitHub sees a run on the local pair (scripts/store_notebooks.py writes it);
    the tests run the notebooks in memory and never write them back."""
    stored = {}
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        notebook = nbformat.read(path, as_version=4)
        nbformat.validate(notebook)
        assert notebook.nbformat == 4
        for code_cell in (c for c in notebook.cells if c.cell_type == "code"):
            assert code_cell.metadata.get("tags") == [code_cell.id], (path.name, code_cell.id)
            assert code_cell.execution_count is not None and code_cell.outputs, code_cell.id
            assert all(o.output_type != "error" for o in code_cell.outputs), code_cell.id
            assert "execution" not in code_cell.metadata, "stored without timings"
        stored[path.stem] = notebook
    assert set(stored) >= {"quickstart", "analysis"}

    quickstart = stored["quickstart"]
    assert "both servers are up" in stdout(cell(quickstart, "servers"))
    assert "token_budget 48" not in stdout(cell(quickstart, "servers")), "not the tests' budget"
    assert re.search(r"^step +0 +(small|large) +H=", stdout(cell(quickstart, "stream")), re.M)
    assert table(shown(cell(quickstart, "trace"), "text/markdown")[0])
    assert shown(cell(quickstart, "entropy-plot"), "image/png")

    analysis = stored["analysis"]
    paired, matched = shown(cell(analysis, "paired"), "text/markdown")
    assert ": against large-only" in paired and "accuracy Δ (pts)" in paired
    assert "against random at its large share" in matched
    assert shown(cell(analysis, "pareto"), "image/png")


def test_quickstart_stops_at_its_first_cell_naming_the_missing_server(kernels):
    port = free_port()
    env = {"GLIMPROUTER_SMALL_BASE_URL": f"http://127.0.0.1:{port}/v1"}
    notebook = nbformat.read(NOTEBOOKS / "quickstart.ipynb", as_version=4)
    with pytest.raises(CellExecutionError):
        execute(notebook, env, kernels)
    (error,) = [o for o in cell(notebook, "servers").outputs if o.output_type == "error"]
    assert error.ename == "EndpointError"
    assert error.evalue.startswith(
        f"cannot reach the small model server at http://127.0.0.1:{port}"
    )
    assert "GLIMPROUTER_SMALL_BASE_URL" in error.evalue
    assert not any("model_servers" in line for line in error.traceback), "the cell, not the client"
    assert cell(notebook, "invoke").outputs == []  # nothing ran after it
