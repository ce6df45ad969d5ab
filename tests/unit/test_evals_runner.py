"""Eval bookkeeping on recorded results: pinning, resume repair, report, calibration."""

import json

import pytest

from glimprouter.errors import ConfigError
from glimprouter.evals.calibrate import calibrate_threshold, recorded_entropies
from glimprouter.evals.datasets import Problem
from glimprouter.evals.report import load_rows, markdown, pareto_plot, summarise
from glimprouter.evals.results import (
    CONFIG_FILE,
    RESULTS_FILE,
    ResultsWriter,
    pin_configuration,
    read_results,
    results_dirs,
    run_identity,
)
from glimprouter.evals.solve import gradable_text
from glimprouter.graph.context import RouterContext
from tests.runs import write_run


def record(
    problem_id,
    repeat,
    correct,
    *,
    latency=10.0,
    small=100,
    large=50,
    steps=4,
    large_steps=1,
    entropies=(0.2, 1.5, 0.4, 0.1),
    error=None,
):
    if error:
        return {"problem_id": problem_id, "repeat": repeat, "error": error, "latency_s": 1.0}
    return {
        "dataset": "math500",
        "problem_id": problem_id,
        "repeat": repeat,
        "correct": correct,
        "latency_s": latency,
        "steps": steps,
        "large_steps": large_steps,
        "small_completion_tokens": small,
        "large_completion_tokens": large,
        "small_requests": 8,
        "large_requests": 2,
        "trace": [{"entropy": e} for e in entropies],
    }


def test_results_of_another_configuration_are_refused_naming_the_difference(tmp_path):
    pin_configuration(tmp_path, run_identity("math500", RouterContext(threshold=1.0), 1))
    pin_configuration(tmp_path, run_identity("math500", RouterContext(threshold=1.0), 3))
    assert json.loads((tmp_path / CONFIG_FILE).read_text())["repeats"] == 3
    with pytest.raises(ConfigError, match=r"threshold: 1\.0 there, 0\.5 now.*--output"):
        pin_configuration(tmp_path, run_identity("math500", RouterContext(threshold=0.5), 1))


def test_a_line_cut_by_a_kill_is_skipped_and_the_next_record_starts_a_line(tmp_path):
    write_run(tmp_path, RouterContext(), [record("a", 0, True), record("b", 0, False)])
    path = tmp_path / RESULTS_FILE
    with path.open("a") as file:
        file.write('{"problem_id": "c", "rep')  # killed mid-write
    before = path.read_bytes()
    assert [r["problem_id"] for r in read_results(tmp_path)] == ["a", "b"]
    assert path.read_bytes() == before  # reading never writes
    with ResultsWriter(tmp_path) as writer:
        writer.write(record("c", 0, True))
    assert [r["problem_id"] for r in read_results(tmp_path)] == ["a", "b", "c"]


def test_report_table_and_plot(tmp_path):
    small_only, glimprouter = tmp_path / "small", tmp_path / "glimp"
    write_run(
        small_only,
        RouterContext(method="small-only"),
        [
            record("a", 0, True, large=0, large_steps=0),
            record("b", 0, False, large=0, large_steps=0),
        ],
    )
    write_run(
        glimprouter,
        RouterContext(threshold=1.0),
        [
            record("a", 0, True),
            record("b", 0, True),
            record("a", 1, True),
            record("b", 1, False),
            record("c", 0, None, error="boom"),
        ],
        repeats=2,
    )
    rows = load_rows(results_dirs([tmp_path]))
    by_label = {row.label: row for row in rows}
    assert by_label["small-only"].accuracy.value == 0.5
    glimp = by_label["glimprouter t=1"]
    # Problem a right in both repeats, b in one: 100% and 50%, averaged over the problems.
    assert glimp.accuracy.value == pytest.approx(0.75)
    assert glimp.accuracy.low <= 0.75 <= glimp.accuracy.high
    assert glimp.failed == 1 and glimp.records == 5
    assert glimp.large_step_share == pytest.approx(0.25)
    assert glimp.large_token_share.value == pytest.approx(50 / 150)
    table = markdown(rows)
    assert "### math500" in table and "| glimprouter t=1 | 5 (1 failed) | 75.0% [" in table
    png = pareto_plot(rows, tmp_path / "pareto.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_summary_of_latency_percentiles():
    row = summarise(
        {"dataset": "d", "method": "large-only", "threshold": 1.0, "large_rate": 0.5},
        [record(str(i), 0, True, latency=float(i)) for i in range(1, 11)],
    )
    assert row.latency_p50.value == pytest.approx(5.5) and row.latency_p90 == pytest.approx(9.1)
    assert row.latency_p50.low < 5.5 < row.latency_p50.high


def test_calibration_hits_the_target_share(tmp_path):
    write_run(
        tmp_path, RouterContext(), [record("a", 0, True, entropies=[0.1 * i for i in range(10)])]
    )
    entropies = recorded_entropies([tmp_path])
    threshold, share = calibrate_threshold(entropies, 0.3)
    assert threshold == pytest.approx(0.7) and share == pytest.approx(0.3)
    assert calibrate_threshold(entropies, 1.0) == (0.0, 1.0)


def test_calibration_needs_glimpse_entropies():
    with pytest.raises(ConfigError, match="--method glimprouter"):
        calibrate_threshold([], 0.3)
    with pytest.raises(ConfigError, match="target-large-share"):
        calibrate_threshold([1.0], 1.5)


def test_report_without_results_says_what_to_pass(tmp_path):
    with pytest.raises(ConfigError, match="glimprouter eval"):
        results_dirs([tmp_path])


def test_a_code_chain_is_graded_with_its_steps_joined_as_the_model_wrote_them():
    # One line a step, as an instruct model writes where a line break ends a step: joined by
    # blank lines, the backslash's statement would end at the blank line (a SyntaxError).
    lines = ["def f():", "    return 1 + \\", "        2", "print(f())"]
    problem = Problem("livecodebench", "p", "Write f.", "code", "")
    steps = [{"text": line} for line in lines]
    text = gradable_text(problem, "It prints 3.", steps, "\n")
    assert text == "\n".join([*lines, "It prints 3."])
    compile(text.removesuffix("\nIt prints 3."), "chain", "exec")
    assert gradable_text(problem, "```python\nprint(3)\n```", steps, "\n").startswith("```")
