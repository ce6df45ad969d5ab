"""Grading multiple choice: the letter in the final \\boxed{} against the gold letter."""

from __future__ import annotations

import re

from glimprouter.evals.datasets import Problem
from glimprouter.evals.grading.base import Grade
from glimprouter.evals.grading.sandbox import SandboxLimits
from glimprouter.parsing import last_boxed

# A leading letter, optionally in parentheses or \text{...}: "B", "(B)", "\text{B}", "B) 4 eV".
_LETTER = re.compile(
    r"^[\s({]*(?:\\(?:text|textbf|textrm|mathrm|mathbf)\s*\{[\s(]*)?([A-D])(?![A-Za-z])"
)


def choice_letter(boxed: str | None) -> str | None:
    """The letter A-D a boxed answer names, or None."""
    match = _LETTER.match(boxed or "")
    return match.group(1) if match else None


async def grade_choice(
    problem: Problem, answer_text: str, final_answer: str | None, limits: SandboxLimits
) -> Grade:
    """Correct when the letter of the final \\boxed{} (`final_answer`, or the last one in
    `answer_text`) is the gold letter."""
    boxed = final_answer if final_answer is not None else last_boxed(answer_text)
    letter = choice_letter(boxed)
    if letter is None:
        return Grade(False, None, f"no letter A-D in the final boxed answer {boxed!r}")
    return Grade(letter == problem.gold, letter, f"gold {problem.gold}, answer {letter}")
