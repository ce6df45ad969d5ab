"""What every grader returns, and the signature graders share."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from glimprouter.evals.datasets import Problem
from glimprouter.evals.grading.sandbox import SandboxLimits


@dataclass(frozen=True)
class Grade:
    """Whether an answer is right, what was taken from it (answer, letter or code) and why."""

    correct: bool
    extracted: str | None
    detail: str


# (problem, the model's answer text, its final answer if already extracted, limits for graders
# that run code) -> Grade
Grader = Callable[[Problem, str, "str | None", SandboxLimits], Awaitable[Grade]]


def shorten(text: str, length: int) -> str:
    """`text` cut to at most `length` characters, marked with "..." where cut: what a grade
    quotes of an answer or of a program's output stays small."""
    return text if len(text) <= length else text[: length - 3] + "..."
