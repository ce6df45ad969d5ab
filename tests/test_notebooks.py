"""The notebooks run top to bottom against the real vLLM server and show what they promise.

Each notebook runs in a fresh kernel of this interpreter (nbclient), configured the way a user
configures it: through GLIMPROUTER_* environment variables. Code cells are tagged with their id,
so the checks find a cell's outputs by tag rather than by position.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from ipykernel.kernelspec import write_kernel_spec
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from jupyter_core.utils import run_sync
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError
from processes import running

from glimprouter.evals.report import load_rows, markdown, paired_markdown
from glimprouter.evals.results import results_dirs
from glimprouter.vllm_launcher.launcher import free_port

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"
CELL_TIMEOUT_S = 300
KERNEL = "glimprouter-test"
# Budgets small enough for SmolLM2-135M on one CPU core (a few tokens per second).
TINY_BUDGET = {
    "GLIMPROUTER_STEP_MAX_TOKENS": "16",
    "GLIMPROUTER_TOKEN_BUDGET": "48",
    "GLIMPROUTER_ANSWER_MAX_TOKENS": "16",
    "GLIMPROUTER_SEED": "0",
}
STEP_LINE = re.compile(r"^step +(\d+) +(small|large) +H=(\d+\.\d+)", re.MULTILINE)


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
    notebook = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    execute(notebook, env, kernels)
    return notebook


def execute(
    notebook: nbformat.NotebookNode, env: dict[str, str], kernels: KernelSpecManager
) -> None:
    """Run every cell in place; raises CellExecutionError at a failing cell, the outputs up to
    there kept in `notebook`. The kernel is shut down either way (nbclient leaves a kernel
    manager it was handed running)."""
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


def test_notebooks_are_stored_clean_and_tagged():
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        notebook = nbformat.read(path, as_version=4)
        nbformat.validate(notebook)
        assert notebook.nbformat == 4
        for code_cell in (c for c in notebook.cells if c.cell_type == "code"):
            assert code_cell.outputs == [] and code_cell.execution_count is None, path.name
            assert code_cell.metadata.get("tags") == [code_cell.id], (path.name, code_cell.id)
    assert {p.stem for p in NOTEBOOKS.glob("*.ipynb")} >= {"quickstart", "analysis"}


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


@pytest.mark.server
def test_quickstart_routes_streams_tabulates_plots_and_moves_the_threshold(vllm_base_url, kernels):
    notebook = run_notebook("quickstart", server_env(vllm_base_url), kernels)

    servers = stdout(cell(notebook, "servers"))
    assert f"'small' at {vllm_base_url}" in servers and f"'large' at {vllm_base_url}" in servers
    assert "token_budget 48" in servers and "both servers are up" in servers

    invoked = stdout(cell(notebook, "invoke"))
    assert re.search(r"^final answer: ", invoked, re.MULTILINE)
    assert re.search(
        r"^stop reason: +(think_end|end_of_sequence|repeated_step|token_budget|max_steps)$",
        invoked,
        re.MULTILINE,
    )
    usage = r"^(small|large) +\d+ requests, \d+ prompt \+ \d+ completion tokens$"
    assert re.search(usage, invoked, re.MULTILINE)

    streamed = stdout(cell(notebook, "stream"))
    live = [(int(i), model, float(h)) for i, model, h in STEP_LINE.findall(streamed)]
    assert [i for i, _, _ in live] == list(range(len(live))) and live
    assert re.search(r"^answer \(large model\): ", streamed, re.MULTILINE)
    assert "final answer:" in streamed

    (trace,) = shown(cell(notebook, "trace"), "text/markdown")
    rows = table(trace)
    assert [(int(r[0]), r[1], float(r[2])) for r in rows] == live
    for _, writer, entropy in live:  # the default threshold is 1.0
        if abs(entropy - 1.0) > 1e-3:
            assert writer == ("large" if entropy >= 1.0 else "small")
    assert sum(int(r[3]) for r in rows) <= 48 and all(r[4].startswith("`") for r in rows)

    assert shown(cell(notebook, "entropy-plot"), "image/png")

    (split,) = shown(cell(notebook, "thresholds"), "text/markdown")
    by_threshold = {float(r[0]): (int(r[1]), int(r[2]), r[3]) for r in table(split)}
    assert set(by_threshold) == {0.0, 1.0, 10.0}
    assert by_threshold[1.0][0] == len(live)
    steps, large, share = by_threshold[0.0]
    assert steps >= 1 and large == steps and share == "100%"
    steps, large, share = by_threshold[10.0]
    assert steps >= 1 and large == 0 and share == "0%"


@pytest.mark.server
def test_analysis_reports_recorded_evals(vllm_base_url, kernels, tmp_path):
    runs = tmp_path / "runs"
    with contextlib.ExitStack() as stack:
        evals = [
            stack.enter_context(
                running(
                    [
                        sys.executable,
                        "-m",
                        "glimprouter.cli",
                        "eval",
                        "--dataset",
                        "math500",
                        "--data-dir",
                        str(DATA_DIR),
                        "--levels",
                        "1",
                        "--limit",
                        "2",
                        *method,
                        "--output",
                        str(runs / name),
                    ],
                    env=kernel_env(server_env(vllm_base_url)),
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            )
            for name, method in (
                ("glimprouter-t0.8", ["--method", "glimprouter", "--threshold", "0.8"]),
                ("small-only", ["--method", "small-only"]),
            )
        ]
        for process in evals:
            _, errors = process.communicate(timeout=600)
            assert process.returncode == 0, errors

    patterns = os.pathsep.join([str(runs / "glimprouter*"), str(runs / "small-only")])
    notebook = run_notebook(
        "analysis", {"GLIMPROUTER_RESULTS": patterns, "GLIMPROUTER_AGAINST": "small-only"}, kernels
    )

    listed = stdout(cell(notebook, "results-dirs")).split()
    assert listed == [str(runs / "glimprouter-t0.8"), str(runs / "small-only")]
    (report,) = shown(cell(notebook, "report-table"), "text/markdown")
    assert report == markdown(load_rows(results_dirs([runs])))
    assert "### math500" in report
    assert "| glimprouter t=0.8 | 2 |" in report and "| small-only | 2 |" in report
    (paired,) = shown(cell(notebook, "paired"), "text/markdown")
    assert paired == paired_markdown(load_rows(results_dirs([runs])), "small-only")
    assert "### math500: against small-only" in paired and "| glimprouter t=0.8 | 2 | " in paired
    (pareto,) = shown(cell(notebook, "pareto"), "image/png")
    assert len(pareto) > 10_000  # base64 of a two-panel plot
    assert len(shown(cell(notebook, "large-share"), "image/png")) == 1
    calibrated = cell(notebook, "calibrate")
    (thresholds,) = shown(calibrated, "text/markdown")
    assert [r[0] for r in table(thresholds)] == ["10%", "30%", "50%"]
    assert len(shown(calibrated, "image/png")) == 1
