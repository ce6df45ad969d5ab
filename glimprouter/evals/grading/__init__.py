"""Graders per task: `grade(problem, answer_text, final_answer)` dispatches on `problem.task`."""

from __future__ import annotations

import dataclasses

from glimprouter.errors import ConfigError
from glimprouter.evals.datasets import Problem
from glimprouter.evals.grading.base import Grade, Grader, shorten
from glimprouter.evals.grading.choice import grade_choice
from glimprouter.evals.grading.code import grade_code
from glimprouter.evals.grading.math_grader import grade_math
from glimprouter.evals.grading.sandbox import DEFAULT_LIMITS, SandboxLimits

GRADERS: dict[str, Grader] = {
    "math": grade_math,
    "multiple_choice": grade_choice,
    "code": grade_code,
}


async def grade(
    problem: Problem,
    answer_text: str,
    final_answer: str | None = None,
    *,
    limits: SandboxLimits = DEFAULT_LIMITS,
) -> Grade:
    """Grade a model's answer to `problem`; `limits` bound the runs of graders that run code."""
    if problem.task not in GRADERS:
        raise ConfigError(f"no grader for task {problem.task!r}; graded tasks: {sorted(GRADERS)}")
    graded = await GRADERS[problem.task](problem, answer_text, final_answer, limits)
    return dataclasses.replace(graded, detail=shorten(graded.detail, MAX_DETAIL))


# A detail quotes the answer or its program's output: bounded, so no record grows with them.
MAX_DETAIL = 500


__all__ = ["GRADERS", "MAX_DETAIL", "Grade", "Grader", "SandboxLimits", "grade"]
