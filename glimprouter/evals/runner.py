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
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from glimprouter.errors import ConfigError
from glimprouter.evals.datasets import Problem
from glimprouter.evals.grading import SandboxLimits
from glimprouter.evals.grading.math_grader import stop_workers
from glimprouter.evals.grading.sandbox import DEFAULT_LIMITS, check_sandbox
from glimprouter.evals.ray_cluster import RayCluster, solved_on_ray
from glimprouter.evals.results import (
    ResultsWriter,
    pin_configuration,
    read_results,
    record_key,
    run_identity,
)
from glimprouter.evals.solve import solve
from glimprouter.graph.context import RouterContext
from glimprouter.model_servers.client import check_endpoints


@dataclasses.dataclass
class Tally:
    """Running figures for the progress display."""

    done: int = 0
    correct: int = 0
    failed: int = 0
    ungraded: int = 0  # counted as wrong: answers the grader could not finish (`grading`)
    steps: int = 0
    large_steps: int = 0

    def add(self, record: dict[str, Any]) -> None:
        self.done += 1
        if record.get("error"):
            self.failed += 1
            return
        self.correct += bool(record["correct"])
        self.ungraded += "grading" in record
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
    cluster: RayCluster | None = None,
) -> Tally:
    """Run every (problem, repeat) not yet recorded in `output_dir`, `concurrency` at a time
    (per Ray worker with a `cluster`); `selection` is recorded with the configuration (see
    `run_identity`) and `limits` bound the sandboxed runs of code problems."""
    if repeats < 1 or concurrency < 1:
        raise ConfigError("--repeats and --concurrency must be at least 1")
    # Stop now, not after a hundred failures; and learn which models the servers serve.
    served = (await check_endpoints(context)).served
    with ResultsWriter(output_dir) as writer:
        identity = run_identity(dataset, context, repeats, served, selection)
        pin_configuration(output_dir, identity)
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
        if cluster is None:
            solved = _solved_here(pending, context, dataset, concurrency, limits)
        else:
            solved = solved_on_ray(cluster, pending, context, dataset, concurrency, limits)
        async for record in solved:
            writer.write(record)
            tally.add(record)
            if on_record is not None:
                on_record(record, tally, len(pending))
        return tally


async def _solved_here(
    pending: Sequence[tuple[Problem, int]],
    context: RouterContext,
    dataset: str,
    concurrency: int,
    limits: SandboxLimits,
) -> AsyncIterator[dict[str, Any]]:
    """The records of `pending`, solved in this process `concurrency` at a time, as each
    finishes."""
    slots = asyncio.Semaphore(concurrency)

    async def one(problem: Problem, repeat: int) -> dict[str, Any]:
        async with slots:
            return await solve(problem, repeat, context, dataset, limits)

    tasks = [asyncio.ensure_future(one(problem, repeat)) for problem, repeat in pending]
    try:
        for finished in asyncio.as_completed(tasks):
            yield await finished
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        stop_workers()  # math grading's processes end with the eval
