"""Run a method over a benchmark through the same compiled graph a user runs.

Every (problem, repeat) becomes one JSON line in DIR/results.jsonl, appended and fsynced as soon
as it finishes, so a killed run loses only what was in flight; a rerun of the same command skips
what is recorded (failed problems are tried again). DIR/config.json pins the configuration the
results belong to (the models as their servers identify them, not only their served names), and
a run with a different one is refused. One eval at a time writes to a directory (an flock on
results.jsonl); reading never writes, and skips any line that is not a record (torn by a kill,
blank, damaged) without losing the lines after it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from glimprouter.errors import ConfigError, GlimpRouterError
from glimprouter.evals.datasets import Problem
from glimprouter.evals.grading import SandboxLimits, grade
from glimprouter.evals.grading.base import shorten
from glimprouter.evals.grading.math_grader import stop_workers
from glimprouter.evals.grading.sandbox import DEFAULT_LIMITS, check_sandbox
from glimprouter.evals.results import (
    ResultsWriter,
    pin_configuration,
    read_results,
    record_key,
    run_identity,
)
from glimprouter.graph.builder import graph, run_config
from glimprouter.graph.context import RouterContext
from glimprouter.graph.invoke import run_question
from glimprouter.model_servers.client import check_endpoints
from glimprouter.prompts import STEP_SEPARATOR


@dataclasses.dataclass
class Tally:
    """Running figures for the progress display."""

    done: int = 0
    correct: int = 0
    failed: int = 0
    steps: int = 0
    large_steps: int = 0

    def add(self, record: dict[str, Any]) -> None:
        self.done += 1
        if record.get("error"):
            self.failed += 1
            return
        self.correct += bool(record["correct"])
        self.steps += record["steps"]
        self.large_steps += record["large_steps"]

    @property
    def accuracy(self) -> float:
        graded = self.done - self.failed
        return self.correct / graded if graded else 0.0

    @property
    def large_step_share(self) -> float:
        return self.large_steps / self.steps if self.steps else 0.0


async def run_eval(
    problems: Sequence[Problem],
    context: RouterContext,
    output_dir: Path,
    *,
    dataset: str,
    repeats: int = 1,
    concurrency: int = 1,
    selection: Mapping[str, Any] | None = None,
    on_record: Callable[[dict[str, Any], Tally, int], None] | None = None,
    limits: SandboxLimits = DEFAULT_LIMITS,
) -> Tally:
    """Run every (problem, repeat) not yet recorded in `output_dir`, `concurrency` at a time;
    `selection` is recorded with the configuration (see `run_identity`) and `limits` bound the
    sandboxed runs of code problems."""
    if repeats < 1 or concurrency < 1:
        raise ConfigError("--repeats and --concurrency must be at least 1")
    # Stop now, not after a hundred failures; and learn which models the servers serve.
    served = (await check_endpoints(context)).served
    with ResultsWriter(output_dir) as writer:
        identity = run_identity(dataset, context, repeats, served, selection)
        pin_configuration(output_dir, identity)
        return await _run_pending(
            problems, context, output_dir, writer, dataset, repeats, concurrency, on_record, limits
        )


async def _run_pending(
    problems: Sequence[Problem],
    context: RouterContext,
    output_dir: Path,
    writer: ResultsWriter,
    dataset: str,
    repeats: int,
    concurrency: int,
    on_record: Callable[[dict[str, Any], Tally, int], None] | None,
    limits: SandboxLimits,
) -> Tally:
    done = {record_key(r) for r in read_results(output_dir) if not r.get("error")}
    pending = [
        (problem, repeat)
        for repeat in range(repeats)
        for problem in problems
        if (problem.id, repeat) not in done
    ]
    tally = Tally()
    if not pending:
        return tally
    if any(problem.task == "code" for problem, _ in pending):
        await check_sandbox(limits)  # a sandbox that cannot isolate: one line, before any work
    slots = asyncio.Semaphore(concurrency)

    async def one(problem: Problem, repeat: int) -> None:
        async with slots:
            record = await solve(problem, repeat, context, dataset, limits)
        writer.write(record)
        tally.add(record)
        if on_record is not None:
            on_record(record, tally, len(pending))

    try:
        await asyncio.gather(*(one(problem, repeat) for problem, repeat in pending))
    finally:
        stop_workers()  # math grading's processes end with the eval
    return tally


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
    base = {
        "dataset": dataset,
        "problem_id": problem.id,
        "repeat": repeat,
        "method": context.method,
        "threshold": context.threshold,
        "large_rate": context.large_rate,
        "gold_answer": problem.gold,
    }
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
        "small_completion_tokens": usage.get("small", {}).get("completion_tokens", 0),
        "large_completion_tokens": usage.get("large", {}).get("completion_tokens", 0),
        "small_prompt_tokens": usage.get("small", {}).get("prompt_tokens", 0),
        "large_prompt_tokens": usage.get("large", {}).get("prompt_tokens", 0),
        "small_requests": usage.get("small", {}).get("requests", 0),
        "large_requests": usage.get("large", {}).get("requests", 0),
        "stop_reason": result["stop_reason"],
        "answer": result["answer"],
        "trace": steps,
    }


def gradable_text(problem: Problem, result: dict[str, Any]) -> str:
    """What the grader reads: the answer, or for code without a block there the whole chain
    (instruct models often write the program while thinking)."""
    answer = result["answer"] or ""
    if problem.task == "code" and "```" not in answer:
        thinking = STEP_SEPARATOR.join(step["text"] for step in result["steps"])
        return f"{thinking}{STEP_SEPARATOR}{answer}"
    return answer
