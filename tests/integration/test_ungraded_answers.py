"""An answer the grader cannot finish is graded false and kept, chain and all (`grading:
"timeout"`, or the grader's error): a rerun asks no model for it again, `report` counts it, and
`glimprouter regrade RUN` grades the kept records again without any model request."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from glimprouter.cli import main
from glimprouter.evals.datasets import Problem
from glimprouter.evals.grading import SandboxLimits
from glimprouter.evals.report import load_rows, markdown
from glimprouter.evals.results import RESULTS_FILE, read_results
from glimprouter.evals.runner import run_eval
from glimprouter.evals.solve import GRADE_FIELDS
from tests.fakes import context_at, fake_model_server

GRADE_TIMEOUT_S = 2.0
# Answers that take sympy longer than any bound, or break its parser.
HOSTILE = {
    "power tower": "\\boxed{9^{9^{9^{9}}}}",
    "huge factorial": "\\boxed{(10^{9})!}",
    "nested braces": "\\boxed{" + "{" * 20_000 + "1" + "}" * 20_000 + "}",
    "1 MB answer": "\\boxed{" + "1+" * 500_000 + "1}",
}
PLAIN = {"plain right": "\\boxed{1}", "plain wrong": "\\boxed{2}"}


def _replying(answers: dict[str, str]):
    """A fault hook that writes the fake's own steps, then answers each question's text."""

    def reply(_: int, request: dict) -> dict | None:
        if not request["messages"][-1]["content"].endswith("</think>\n\n"):
            return None
        question = next(q for q in answers if f"[{q}]" in request["messages"][0]["content"])
        return {"content": answers[question], "finish_reason": "stop"}

    return reply


def _problems(names) -> list[Problem]:
    return [Problem("hostile", name, f"What is [{name}]?", "math", "1") for name in names]


async def _eval(server, run_dir: Path, names) -> object:
    context = context_at(server.url, answer_max_tokens=1_000_000, method="small-only")
    limits = SandboxLimits(grade_timeout_s=GRADE_TIMEOUT_S)
    return await run_eval(
        _problems(names), context, run_dir, dataset="hostile", concurrency=4, limits=limits
    )


async def test_hostile_answers_are_graded_false_within_the_bound_and_kept(tmp_path: Path):
    answers = HOSTILE | PLAIN
    with fake_model_server(fault=_replying(answers)) as server:
        tally = await _eval(server, tmp_path, answers)
        asked = len(server.requests)
        rerun = await _eval(server, tmp_path, answers)
        assert len(server.requests) == asked  # nothing is asked of a model again
    assert (tally.done, tally.failed, rerun.done) == (len(answers), 0, 0)
    records = {record["problem_id"]: record for record in read_results(tmp_path)}
    assert records["power tower"]["grading"] == "timeout"
    assert f"math-verify took over {GRADE_TIMEOUT_S:g} s" in records["power tower"]["grade_detail"]
    for name, text in HOSTILE.items():
        record = records[name]
        assert "error" not in record and record["correct"] is False and record["grading"], name
        assert record["answer"] == text and record["trace"] and record["steps"] == 3, name
    assert records["plain right"]["correct"] and "grading" not in records["plain right"]
    assert not records["plain wrong"]["correct"] and "grading" not in records["plain wrong"]
    assert tally.ungraded == sum("grading" in r for r in records.values()) >= 2
    (row,) = load_rows([tmp_path])
    assert row.ungraded == tally.ungraded and row.failed == 0
    assert f"| {len(answers)} ({tally.ungraded} ungraded) |" in markdown([row])


def test_regrade_changes_only_grades_and_asks_no_model(tmp_path: Path, capsys):
    answers = {"power tower": HOSTILE["power tower"], **PLAIN}
    with fake_model_server(fault=_replying(answers)) as server:
        asyncio.run(_eval(server, tmp_path, answers))
    # The server is gone: regrade cannot reach a model. A grader bug marked a wrong answer
    # right; a line torn by a kill stays as it was.
    path = tmp_path / RESULTS_FILE
    lines = path.read_text().splitlines(keepends=True)
    wrong = next(i for i, line in enumerate(lines) if '"plain wrong"' in line)
    lines[wrong] = lines[wrong].replace('"correct": false', '"correct": true')
    path.write_text("".join(lines) + '{"problem_id": "torn", "rep')
    before = {r["problem_id"]: r for r in read_results(tmp_path)}
    status = main(["regrade", str(tmp_path), "--grade-timeout", f"{GRADE_TIMEOUT_S:g}"])
    printed = capsys.readouterr().out.strip()
    assert status == 0
    assert printed == (f"{tmp_path}: 3 records regraded, 1 grades changed, correct 2 -> 1, "
                       "1 ungraded")  # fmt: skip
    after = {r["problem_id"]: r for r in read_results(tmp_path)}
    assert after.keys() == before.keys()
    for name, record in after.items():
        unchanged = {k: v for k, v in record.items() if k not in GRADE_FIELDS}
        assert unchanged == {k: v for k, v in before[name].items() if k not in GRADE_FIELDS}
    assert after["plain wrong"]["correct"] is False and after["plain right"]["correct"] is True
    assert after["power tower"]["grading"] == "timeout"
    assert path.read_text().endswith('{"problem_id": "torn", "rep')


def test_eval_ends_with_the_ungraded_count_and_exit_0(tmp_path: Path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")  # the closing line on one line
    data = tmp_path / "towers.jsonl"
    data.write_text("".join(json.dumps({"problem": f"Tower [{n}]?", "answer": "1"}) + "\n"
                            for n in range(2)))  # fmt: skip
    towers = {str(n): HOSTILE["power tower"] for n in range(2)}
    run_dir = tmp_path / "run"
    with fake_model_server(fault=_replying(towers)) as server:
        status = main(["eval", "--data-file", str(data), "--output", str(run_dir),
                       "--grade-timeout", f"{GRADE_TIMEOUT_S:g}", "--answer-max-tokens", "64",
                       "--small-url", server.url, "--large-url", server.url])  # fmt: skip
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert status == 0
    assert "2 new records, accuracy 0.0%, 0 failed, 2 ungraded" in last
    assert f"glimprouter regrade {run_dir}" in last


@pytest.mark.parametrize("value", ["0", "-1", "soon", "nan"])
def test_grade_timeout_must_be_positive_seconds(value: str, tmp_path: Path, capsys):
    with pytest.raises(SystemExit) as refused:
        main(["regrade", str(tmp_path), "--grade-timeout", value])
    assert refused.value.code == 2
    assert f"--grade-timeout takes seconds above 0, not {value!r}" in capsys.readouterr().err
