"""The notebooks as stored, and the way the tests run them (tests/vllm/test_notebooks.py runs them
top to bottom against the real vLLM server and checks they show what they promise).

Each notebook runs in a fresh kernel of this interpreter (nbclient), configured the way a user
configures it: through GLIMPROUTER_* environment variables. Code cells are tagged with their id,
so the checks find a cell's outputs by tag rather than by position.
"""

from __future__ import annotations

import re

import nbformat
import pytest
from nbclient.exceptions import CellExecutionError

from glimprouter.vllm_launcher.command import free_port
from tests.notebooks import NOTEBOOKS, cell, execute, shown, stdout, table


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
