"""Model outputs that used to break an eval: each is graded (or fails its own grading, recorded as
an error a rerun retries) and the run goes on. The suite ends with a real eval of them all."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import pickle
import signal
import zlib
from dataclasses import replace
from pathlib import Path

import psutil
import pytest

from glimprouter.errors import ConfigError
from glimprouter.evals.datasets import CodeTest, Problem, _code_tests
from glimprouter.evals.grading import MAX_DETAIL, SandboxLimits, grade, math_grader
from glimprouter.evals.grading.code import compare_stdout
from glimprouter.evals.grading.math_grader import GradingError, verify_in_worker
from glimprouter.evals.results import read_results
from glimprouter.evals.runner import run_eval
from tests.fakes import context_at, fake_model_server

ROOMY = SandboxLimits(time_s=10.0)
# sympy computes this power exactly, for minutes, inside one C call.
HUGE_POWER = "\\boxed{10^{10^{9}}}"


def _code(source: str) -> str:
    return f"```python\n{source}\n```"


def _stdin_problem(output: str = "1\n", problem_id: str = "stdin") -> Problem:
    return Problem("test", problem_id, "q", "code", "", tests=(CodeTest("", output, "stdin"),))


FUNCTIONAL = Problem(
    "test", "functional", "q", "code", "", fn_name="f", tests=(CodeTest("1", "[1]", "functional"),)
)
# A functional solution that writes its own "result" to the grader's descriptor.
DEEP_RESULT = (
    "import os\nclass Solution:\n    def f(self, x):\n        os.write(1, b'[' * 100000)\n"
)


@pytest.mark.parametrize("line", ["sNaN", "1 sNaN", "NaN", "-sNaN123"])
def test_not_a_number_is_a_wrong_answer_not_a_crash(line: str) -> None:
    assert compare_stdout(line, "1") is not None
    assert compare_stdout(line, line) is None  # the same text is still the same text


async def test_a_result_nested_past_the_parser_is_a_wrong_answer() -> None:
    graded = await grade(FUNCTIONAL, _code(DEEP_RESULT), limits=ROOMY)
    assert graded.detail == "test 1/1: wrong answer: no JSON result"


async def test_a_result_past_the_integer_digit_limit_is_a_wrong_answer() -> None:
    source = "import os\nclass Solution:\n    def f(self, x):\n        os.write(1, b'7' * 10000)\n"
    graded = await grade(FUNCTIONAL, _code(source), limits=ROOMY)
    assert graded.detail == "test 1/1: wrong answer: no JSON result"


@pytest.mark.parametrize(
    "source",
    [
        "import sys\nsys.stderr.write('E' * (8 << 20))\nsys.exit(1)",  # one 8 MiB line
        "print('x' * (1 << 20))",  # a wrong answer quoting a huge line
    ],
)
async def test_the_grade_detail_is_bounded(source: str) -> None:
    graded = await grade(_stdin_problem(), _code(source), limits=ROOMY)
    assert not graded.correct and len(graded.detail) <= MAX_DETAIL, len(graded.detail)


async def test_a_solution_that_is_not_unicode_is_graded() -> None:
    graded = await grade(_stdin_problem(), _code("print('\ud800')"), limits=ROOMY)
    assert graded.detail == "test 1/1: wrong answer: line 1: '?' instead of '1'"


def _grading_workers() -> list[psutil.Process]:
    """The live math grading workers of this process (not its other children, such as the
    session's vLLM server)."""
    workers = []
    for child in psutil.Process().children():
        try:
            if str(math_grader.WORKER_SCRIPT) in child.cmdline():
                if child.status() != psutil.STATUS_ZOMBIE:
                    workers.append(child)
        except psutil.NoSuchProcess:  # ended (and reaped) meanwhile
            continue
    return workers


async def test_a_math_check_that_hangs_is_killed_and_the_next_one_graded() -> None:
    try:
        with pytest.raises(GradingError, match="math-verify took over 2 s"):
            await verify_in_worker("1", HUGE_POWER, timeout_s=2.0)
        assert (await verify_in_worker("\\frac{1}{2}", "\\boxed{0.5}"))[0]
    finally:
        math_grader.stop_workers()
    assert not _grading_workers()


async def test_a_math_check_waiting_for_a_core_is_not_timed_out() -> None:
    # A stopped worker computes nothing, as one starved by busy model servers: only its CPU time
    # counts against the check's bound, so the answer it gives once resumed is the grade.
    try:
        assert (await verify_in_worker("1", "\\boxed{1}"))[0]
        worker = math_grader._idle[0].process
        os.kill(worker.pid, signal.SIGSTOP)
        asyncio.get_running_loop().call_later(2.0, os.kill, worker.pid, signal.SIGCONT)
        assert (await verify_in_worker("\\frac{1}{2}", "\\boxed{0.5}", timeout_s=1.0))[0]
    finally:
        math_grader.stop_workers()


def _pickled(value: object) -> str:
    return base64.b64encode(zlib.compress(pickle.dumps(value))).decode()


class _RunsCode:
    def __reduce__(self):
        return (exec, ("open('pwned', 'w').close()",))


def test_hidden_tests_are_unpickled_without_running_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cases = [{"input": "1\n", "output": "2\n", "testtype": "stdin"}]
    assert _code_tests(_pickled(json.dumps(cases))) == (CodeTest("1\n", "2\n", "stdin"),)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="refused global builtins.exec.*--data-dir"):
        _code_tests(_pickled(_RunsCode()))
    assert not (tmp_path / "pwned").exists()
    with pytest.raises(ConfigError, match="holds a list"):
        _code_tests(_pickled(cases))


# Answers (the model's final text) that broke or slowed the grading of an eval.
HOSTILE_MATH = {
    "huge power": HUGE_POWER,
    "deeply nested": "\\boxed{" + "(" * 5000 + "1" + ")" * 5000 + "}",
    "huge": "\\boxed{" + "9" * 100_000 + "}",
    "not unicode": "\\boxed{\ud800}",
    "brackets": "\\boxed{" + "[[" * 20_000 + "}",
    "not a number": "\\boxed{sNaN}",
}
HOSTILE_CODE = {
    "deep json": (FUNCTIONAL, DEEP_RESULT),
    "signalling nan": (_stdin_problem(), "print('sNaN')"),
    "huge stderr": (_stdin_problem(), "import sys\nsys.stderr.write('E' * (8 << 20))\nexit(1)"),
    "invalid utf-8": (_stdin_problem(), "import os\nos.write(1, b'\\xff\\xfe\\xfa')"),
    "deep output": (_stdin_problem(), "print('[[' * 10**5)"),
}


async def test_hostile_answers_run_through_an_eval_without_aborting_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Only the checks sympy chokes on reach it; they are then graded false and kept, ungraded.
    monkeypatch.setattr(math_grader, "VERIFY_TIMEOUT_S", 3.0)
    problems, answers = [], {}
    for name, text in HOSTILE_MATH.items():
        problems.append(Problem("hostile", f"math {name}", f"[{name}]", "math", "1"))
        answers[f"[{name}]"] = text
    for name, (problem, source) in HOSTILE_CODE.items():
        problems.append(replace(problem, id=f"code {name}", question=f"<{name}>"))
        answers[f"<{name}>"] = _code(source)

    def reply(index: int, request: dict) -> dict | None:
        # The answer request continues "</think>\n\n"; every step before it is the fake's own.
        if not request["messages"][-1]["content"].endswith("</think>\n\n"):
            return None
        question = next(q for q in answers if q in request["messages"][0]["content"])
        return {"content": answers[question], "finish_reason": "stop"}

    with fake_model_server(fault=reply) as server:
        context = context_at(server.url, answer_max_tokens=1_000_000, method="small-only")
        tally = await run_eval(problems, context, tmp_path, dataset="hostile", concurrency=4)
    records = {r["problem_id"]: r for r in read_results(tmp_path)}
    assert tally.done == len(problems) == len(records)
    huge_power = records["math huge power"]
    assert huge_power["grading"] == "timeout"
    assert "math-verify took over" in huge_power["grade_detail"]
    for problem_id, record in records.items():
        assert "error" not in record and not record["correct"], problem_id
        assert len(json.dumps(record)) < 300_000, problem_id  # the answer, not 8 MiB of stderr
        if problem_id.startswith("code"):
            assert "error" not in record and len(record["grade_detail"]) <= MAX_DETAIL
