"""Grading math: the final answer against the gold answer with math-verify."""

from __future__ import annotations

import asyncio
import logging

from math_verify import parse, verify

from glimprouter.evals.datasets import Problem
from glimprouter.evals.grading.base import Grade
from glimprouter.evals.grading.sandbox import SandboxLimits

VERIFY_TIMEOUT_S = 10.0

# math-verify warns once that its own timeouts are off; they are, on purpose (see grade_math).
logging.getLogger("math_verify").setLevel(logging.ERROR)


async def grade_math(
    problem: Problem, answer_text: str, final_answer: str | None, limits: SandboxLimits
) -> Grade:
    """Equivalent answers count ("0.5" = "\\frac{1}{2}"); the answer is `final_answer` when
    given, else whatever math-verify finds in `answer_text` (its last \\boxed{} first)."""
    prediction_text = f"\\boxed{{{final_answer}}}" if final_answer is not None else answer_text
    # math-verify's own timeouts use SIGALRM, which works only in the main thread: they are off
    # here and the whole check runs in a worker thread under asyncio's timeout instead. A check
    # that times out keeps its thread busy until sympy gives up, but the eval moves on.
    try:
        correct, extracted = await asyncio.wait_for(
            asyncio.to_thread(_verify, problem.gold, prediction_text), VERIFY_TIMEOUT_S
        )
    except TimeoutError:
        return Grade(False, final_answer, f"math-verify took over {VERIFY_TIMEOUT_S:g} s")
    return Grade(correct, extracted, f"gold {problem.gold!r}, answer {extracted!r}")


def _verify(gold: str, prediction_text: str) -> tuple[bool, str | None]:
    gold_parsed = parse(f"${gold}$", parsing_timeout=None)
    prediction = parse(prediction_text, parsing_timeout=None)
    extracted = str(prediction[-1]) if prediction else None
    return verify(gold_parsed, prediction, timeout_seconds=None), extracted
