"""One problem, one record: run the graph on it through the compiled graph a user runs, and
grade the result. The local runner and the Ray workers both call `solve`."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from glimprouter.errors import GlimpRouterError
from glimprouter.evals.datasets import Problem
from glimprouter.evals.grading import SandboxLimits, grade
from glimprouter.evals.grading.base import shorten
from glimprouter.evals.grading.sandbox import DEFAULT_LIMITS
from glimprouter.graph.builder import graph, run_config
from glimprouter.graph.context import RouterContext
from glimprouter.graph.invoke import run_question
from glimprouter.prompts import STEP_SEPARATOR
from glimprouter.strategies import MODEL_ROLES


async def solve(
    problem: Problem,
    repeat: int,
    context: RouterContext,
    dataset: str,
    limits: SandboxLimits = DEFAULT_LIMITS,
) -> dict[str, Any]:
    """Run the graph on one problem and grade it: one results record (with `error` on failure,
    which a rerun retries)."""
    # Each repeat samples differently but repeatably.
    run_context = dataclasses.replace(context, seed=(context.seed or 0) + repeat)
    base = record_base(problem, repeat, context, dataset)
    started = time.perf_counter()
    try:
        result = await run_question(
            graph,
            {"question": problem.question, "task": problem.task},
            run_context,
            run_config(run_context),
        )
        latency = time.perf_counter() - started
        if result.get("error"):
            # A server failed mid-chain: record it with the partial trace; a rerun retries it.
            return {
                **base,
                "error": result["error"],
                "latency_s": round(latency, 3),
                "stop_reason": result["stop_reason"],
                "trace": result["steps"] or [],
            }
    except GlimpRouterError as error:
        return {**base, "error": str(error), "latency_s": time.perf_counter() - started}
    try:
        graded = await grade(
            problem, gradable_text(problem, result), result["final_answer"], limits=limits
        )
    # Whatever the model's output makes the grader raise (RecursionError, MemoryError, a sympy
    # failure, a sandbox that could not confine the run) fails this problem's grading only: the
    # run goes on, and it is not a wrong answer.
    except Exception as error:  # noqa: BLE001
        return {
            **base,
            "error": f"grading failed: {type(error).__name__}: {shorten(str(error), 300)}",
            "latency_s": round(latency, 3),
            "stop_reason": result["stop_reason"],
            "answer": result["answer"],
        }
    steps = result["steps"]
    usage = result["usage"]
    return {
        **base,
        "correct": graded.correct,
        "extracted_answer": graded.extracted,
        "grade_detail": graded.detail,
        "latency_s": round(latency, 3),
        "steps": len(steps),
        "large_steps": sum(step["model"] == "large" for step in steps),
        **{
            f"{role}_{count}": usage.get(role, {}).get(count, 0)
            for count in ("completion_tokens", "prompt_tokens")
            for role in MODEL_ROLES
        },
        # Absent where neither server reported its prefix cache (see ModelUsage).
        **{
            f"{role}_{count}": usage[role][count]
            for role in MODEL_ROLES
            if "cached_prompt_tokens" in usage.get(role, {})
            for count in ("cached_prompt_tokens", "counted_prompt_tokens")
        },
        **{f"{role}_requests": usage.get(role, {}).get("requests", 0) for role in MODEL_ROLES},
        "stop_reason": result["stop_reason"],
        "answer": result["answer"],
        "trace": steps,
    }


def record_base(
    problem: Problem, repeat: int, context: RouterContext, dataset: str
) -> dict[str, Any]:
    """What every record of (problem, repeat) holds, whether it was solved or failed."""
    return {
        "dataset": dataset,
        "problem_id": problem.id,
        "repeat": repeat,
        "method": context.method,
        "threshold": context.threshold,
        "large_rate": context.large_rate,
        "gold_answer": problem.gold,
    }


def gradable_text(problem: Problem, result: dict[str, Any]) -> str:
    """What the grader reads: the answer, or for code without a block there the whole chain
    (instruct models often write the program while thinking)."""
    answer = result["answer"] or ""
    if problem.task == "code" and "```" not in answer:
        thinking = STEP_SEPARATOR.join(step["text"] for step in result["steps"])
        return f"{thinking}{STEP_SEPARATOR}{answer}"
    return answer
