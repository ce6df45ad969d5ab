"""One problem, one record: run the graph on it through the compiled graph a user runs, and
grade the result. The local runner and the Ray workers both call `solve`; `glimprouter regrade`
calls `graded_record` on the records kept."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from glimprouter.errors import GlimpRouterError
from glimprouter.evals.datasets import Problem
from glimprouter.evals.grading import SandboxLimits, grade
from glimprouter.evals.grading.base import shorten
from glimprouter.evals.grading.math_grader import GradingTimeout
from glimprouter.evals.grading.sandbox import DEFAULT_LIMITS, SandboxUnavailable
from glimprouter.graph.builder import graph, run_config
from glimprouter.graph.context import RouterContext
from glimprouter.graph.invoke import run_question
from glimprouter.parsing import last_boxed
from glimprouter.prompts import STEP_SEPARATOR
from glimprouter.strategies import MODEL_ROLES


async def solve(
    problem: Problem,
    repeat: int,
    context: RouterContext,
    dataset: str,
    limits: SandboxLimits = DEFAULT_LIMITS,
) -> dict[str, Any]:
    """Run the graph on one problem and grade it: one results record (with `error` when the run
    failed, which a rerun retries; an answer the grader could not finish is graded false, see
    `graded_record`)."""
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
    steps = result["steps"]
    usage = result["usage"]
    record = {
        **base,
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
    try:
        return await graded_record(problem, record, limits, context.step_separator)
    except SandboxUnavailable as error:
        # The run could not be graded here at all: a failure a rerun retries, chain and all.
        return {
            **{key: record[key] for key in (*base, "latency_s", "stop_reason", "answer")},
            "error": f"grading failed: {type(error).__name__}: {shorten(str(error), 300)}",
        }


# What grading writes into a record; everything else in it is the run's.
GRADE_FIELDS = ("correct", "extracted_answer", "grade_detail", "grading")


async def graded_record(
    problem: Problem,
    record: dict[str, Any],
    limits: SandboxLimits = DEFAULT_LIMITS,
    step_separator: str = STEP_SEPARATOR,
) -> dict[str, Any]:
    """`record` with its grade (re)computed from its answer and chain, nothing else changed.

    A model's answer is data to grade, whatever it is: one the grader cannot finish within its
    bound, or that makes it raise (RecursionError, MemoryError, a sympy failure), is not equal
    to the gold answer, recorded with `grading` ("timeout", or the grader's error) beside
    `correct: false`, so `glimprouter regrade` can grade it again without asking a model.
    SandboxUnavailable (the machine, not the answer) propagates. `step_separator`: what ended
    the chain's steps (the run's), which joins them where the grader reads the chain."""
    steps = record.get("trace") or []
    text = gradable_text(problem, record["answer"] or "", steps, step_separator)
    try:
        graded = await grade(problem, text, final_answer_of(record), limits=limits)
    except SandboxUnavailable:
        raise
    except GradingTimeout as error:
        grade_fields = {"correct": False, "extracted_answer": None, "grade_detail": str(error),
                        "grading": "timeout"}  # fmt: skip
    except Exception as error:  # noqa: BLE001 - see the docstring
        why = f"{type(error).__name__}: {shorten(str(error), 300)}"
        grade_fields = {"correct": False, "extracted_answer": None, "grade_detail": why,
                        "grading": why}  # fmt: skip
    else:
        grade_fields = {
            "correct": graded.correct,
            "extracted_answer": graded.extracted,
            "grade_detail": graded.detail,
        }
    regraded = {**record, **grade_fields}
    if "grading" not in grade_fields:
        regraded.pop("grading", None)
    return regraded


def final_answer_of(record: dict[str, Any]) -> str | None:
    """The run's final answer as the answer node took it: the last \\boxed{} of the answer,
    else of the thinking (derived, not stored: a record holds each text once)."""
    thinking = STEP_SEPARATOR.join(step["text"] for step in record.get("trace") or [])
    return last_boxed(record["answer"] or "") or last_boxed(thinking)


def record_base(
    problem: Problem, repeat: int, context: RouterContext, dataset: str
) -> dict[str, Any]:
    """What every record of (problem, repeat) holds, whether it was solved or failed."""
    return {
        "dataset": dataset,
        "problem_id": problem.id,
        "repeat": repeat,
        "task": problem.task,
        "method": context.method,
        "threshold": context.threshold,
        "large_rate": context.large_rate,
        "gold_answer": problem.gold,
    }


def gradable_text(
    problem: Problem, answer: str, steps: list[dict[str, Any]], separator: str = STEP_SEPARATOR
) -> str:
    """What the grader reads: the answer, or for code without a block there the whole chain, its
    steps joined by their `separator` as the model wrote them (instruct models often write the
    program while thinking, one line a step where a line break ends a step)."""
    if problem.task == "code" and "```" not in answer:
        thinking = separator.join(step["text"] for step in steps)
        return f"{thinking}{separator}{answer}"
    return answer
