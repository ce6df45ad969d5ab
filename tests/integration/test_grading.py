"""Graders: math-verify equivalences, GPQA letters, and code run in the sandbox (whose
containment of hostile programs test_sandbox_hostile.py tests)."""

from __future__ import annotations

import pytest

from glimprouter.evals.datasets import CodeTest, Problem
from glimprouter.evals.grading import SandboxLimits, grade
from glimprouter.evals.grading.choice import choice_letter
from glimprouter.evals.grading.code import compare_stdout, extract_code
from tests.sandboxes import FAST, ROOMY


def _math(gold: str) -> Problem:
    return Problem("test", "1", "q", "math", gold)


@pytest.mark.parametrize(
    ("gold", "answer"),
    [
        ("\\frac{1}{2}", "0.5"),
        ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3,\\pi/2)"),
        ("10", "10.0"),
        ("204", "204"),
    ],
)
async def test_math_equivalent(gold: str, answer: str) -> None:
    assert (await grade(_math(gold), "", answer)).correct


@pytest.mark.parametrize(("gold", "answer"), [("3", "4"), ("\\frac{1}{2}", "2"), ("10", "")])
async def test_math_not_equivalent(gold: str, answer: str) -> None:
    assert not (await grade(_math(gold), "", answer)).correct


async def test_math_reads_the_answer_text_without_final_answer() -> None:
    result = await grade(_math("\\frac{1}{2}"), "Halving 1 gives \\boxed{\\dfrac12}.")
    assert result.correct


@pytest.mark.parametrize("boxed", ["B", "(B)", "\\text{B}", "B) 10^-4 eV", "\\textbf{(B)}"])
async def test_choice_letter_forms(boxed: str) -> None:
    problem = Problem("test", "1", "q", "multiple_choice", "B")
    assert choice_letter(boxed) == "B"
    answer = f"So \\boxed{{A}} is wrong; the answer is \\boxed{{{boxed}}}"
    assert (await grade(problem, answer)).correct
    assert not (await grade(problem, "", "C")).correct


def test_choice_letter_rejects_other_text() -> None:
    assert [choice_letter(text) for text in ("Both", "E", "", None)] == [None] * 4


def test_extract_code_takes_the_last_block() -> None:
    answer = "```python\nprint(1)\n```\nor better:\n```\nprint(2)\n```"
    assert extract_code(answer) == "print(2)"
    assert extract_code("print(3)") is None


def test_compare_stdout_as_livecodebench() -> None:
    assert compare_stdout("3 \n 4\n\n", "3\n4") is None
    assert compare_stdout("0.50 1", "0.5 1.0") is None
    assert compare_stdout("3", "4") is not None
    assert compare_stdout("3\n4", "3") is not None
    assert compare_stdout("Yes", "YES") is not None


SECOND_LARGEST = Problem(
    "test",
    "abc365_b",
    "q",
    "code",
    "",
    tests=(
        CodeTest("4\n8 2 5 1\n", "3\n", "stdin"),
        CodeTest("8\n1 2 3 4 5 10 9 11\n", "6\n", "stdin"),
    ),
)


def _code(source: str) -> str:
    return f"Here it is:\n```python\n{source}\n```\n"


async def test_code_correct() -> None:
    source = "input()\na = list(map(int, input().split()))\nprint(a.index(sorted(a)[-2]) + 1)"
    result = await grade(SECOND_LARGEST, _code(source), limits=ROOMY)
    assert result.correct, result.detail


@pytest.mark.parametrize(
    ("source", "detail", "limits"),
    [
        ("print(3)", "test 2/2: wrong answer", ROOMY),
        ("raise ValueError('boom')", "test 1/2: runtime error: ValueError: boom", ROOMY),
        ("while True:\n    pass", "test 1/2: time limit exceeded", FAST),
        ("hog = bytearray(4 << 30)", "test 1/2: memory limit exceeded", ROOMY),
    ],
)
async def test_code_failures(source: str, detail: str, limits: SandboxLimits) -> None:
    result = await grade(SECOND_LARGEST, _code(source), limits=limits)
    assert not result.correct
    assert result.detail.startswith(detail), result.detail


async def test_code_functional() -> None:
    problem = Problem(
        "test",
        "3500",
        "q",
        "code",
        "",
        fn_name="addAll",
        tests=(
            CodeTest("[1, 2]\n2", "[3, 4]", "functional"),
            CodeTest("[]\n5", "[]", "functional"),
        ),
    )
    # List comes from LiveCodeBench's import header; the print must not spoil the result.
    source = (
        "class Solution:\n    def addAll(self, nums: List[int], k: int) -> List[int]:\n"
        "        print('debugging')\n        return tuple(x + k for x in nums)"
    )
    result = await grade(problem, _code(source), limits=ROOMY)
    assert result.correct, result.detail
    wrong = await grade(problem, _code(source.replace("x + k", "x - k")), limits=ROOMY)
    assert wrong.detail.startswith("test 1/2: wrong answer: returned [-1, 0]"), wrong.detail
