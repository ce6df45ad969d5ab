"""Grading code: the answer's last fenced block against every test of the problem, as
LiveCodeBench grades it (lcb_runner/evaluation/testing_util.py), each test in the sandbox."""

from __future__ import annotations

import json
from decimal import Decimal, InvalidOperation

from glimprouter.evals.datasets import CodeTest, Problem
from glimprouter.evals.grading.base import Grade, shorten
from glimprouter.evals.grading.sandbox import RunResult, SandboxLimits, run_python


def extract_code(answer_text: str) -> str | None:
    """The lines between the last two lines holding ``` (LiveCodeBench's rule), if any."""
    lines = answer_text.split("\n")
    fences = [number for number, line in enumerate(lines) if "```" in line]
    if len(fences) < 2:
        return None
    return "\n".join(lines[fences[-2] + 1 : fences[-1]])


async def grade_code(
    problem: Problem, answer_text: str, final_answer: str | None, limits: SandboxLimits
) -> Grade:
    """Correct only if every test passes; tests run one at a time and stop at the first failure,
    which the detail names."""
    source = extract_code(answer_text)
    if source is None:
        return Grade(False, None, "no fenced code block (```python ... ```) in the answer")
    if not problem.tests:
        return Grade(False, source, f"problem {problem.id} has no tests to run")
    for number, test in enumerate(problem.tests, 1):
        functional = test.testtype == "functional"
        result = await run_python(
            source, test.input, limits=limits, fn_name=problem.fn_name if functional else None
        )
        failure = _failure(test, result, limits)
        if failure is not None:
            return Grade(False, source, f"test {number}/{len(problem.tests)}: {failure}")
    return Grade(True, source, f"passed all {len(problem.tests)} tests")


def _failure(test: CodeTest, result: RunResult, limits: SandboxLimits) -> str | None:
    if result.outcome == "timeout":
        return f"time limit exceeded ({limits.time_s:g} s)"
    if result.outcome == "memory":
        return f"memory limit exceeded ({limits.memory_mb} MiB)"
    if result.outcome == "error":
        lines = result.stderr.strip().splitlines()
        return f"runtime error: {shorten(lines[-1], 200) if lines else 'exit status not 0'}"
    if test.testtype == "functional":
        expected = json.loads(test.output)
        try:
            returned = json.loads(result.stdout)
        # Not JSON, nested too deep for the parser, or an integer past Python's digit limit.
        except (ValueError, RecursionError):
            return "wrong answer: no JSON result"
        if returned != expected:
            return f"wrong answer: returned {_short(returned)}, expected {_short(expected)}"
        return None
    return compare_stdout(result.stdout, test.output)


def compare_stdout(output: str, expected: str) -> str | None:
    """Why `output` differs from `expected`, or None: LiveCodeBench's comparison, line by line
    after stripping, lines equal as text or as the same list of decimal numbers."""
    got, want = _stripped_lines(output), _stripped_lines(expected)
    if len(got) != len(want):
        return f"wrong answer: {len(got)} output lines, expected {len(want)}"
    for number, (line, wanted) in enumerate(zip(got, want, strict=True), 1):
        if line != wanted and (_decimals(line) is None or _decimals(line) != _decimals(wanted)):
            return f"wrong answer: line {number}: {_short(line)} instead of {_short(wanted)}"
    return None


def _stripped_lines(text: str) -> list[str]:
    return [line.strip() for line in text.strip().split("\n")]


def _decimals(line: str) -> list[Decimal] | None:
    """The line as decimal numbers, or None; NaNs are no numbers here (a signalling one raises
    InvalidOperation when compared, and no NaN equals another)."""
    try:
        numbers = [Decimal(token) for token in line.split()]
    except InvalidOperation:
        return None
    return None if any(number.is_nan() for number in numbers) else numbers


def _short(value: object, length: int = 80) -> str:
    return shorten(repr(value), length)
