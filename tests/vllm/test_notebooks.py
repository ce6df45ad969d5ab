"""The notebooks run top to bottom against the real vLLM server and show what they promise.

The kernels (fixture `kernels`, through tests/vllm/conftest.py), the way a notebook is run and
the readers of its outputs are tests/notebooks.py's; tests/integration/test_notebooks.py checks
the notebooks as stored and the first cell's error without a server.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys

import pytest

from glimprouter.evals.report import load_rows, markdown, paired_markdown
from glimprouter.evals.results import results_dirs
from tests.notebooks import (
    cell,
    kernel_env,
    png_size,
    run_notebook,
    server_env,
    shown,
    stdout,
    table,
)
from tests.paths import SHARED_DATA
from tests.processes import running

DATA_DIR = SHARED_DATA
STEP_LINE = re.compile(r"^step +(\d+) +(small|large) +H=(\d+\.\d+)", re.MULTILINE)


@pytest.mark.vllm
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


@pytest.mark.vllm
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
    # One dataset: one row of two panels, drawn 11 x 4.2 inches (report.pareto_plot).
    width, height = png_size(pareto)
    assert abs(width / height - 11 / 4.2) < 0.05, (width, height)
    assert len(shown(cell(notebook, "large-share"), "image/png")) == 1
    calibrated = cell(notebook, "calibrate")
    (thresholds,) = shown(calibrated, "text/markdown")
    assert [r[0] for r in table(thresholds)] == ["10%", "30%", "50%"]
    assert len(shown(calibrated, "image/png")) == 1
