"""Run a method over a benchmark through the same compiled graph a user runs.

Every (problem, repeat) becomes one JSON line in DIR/results.jsonl, appended and fsynced as soon
as it finishes, so a killed run loses only what was in flight; a rerun of the same command skips
what is recorded (failed problems are tried again). DIR/config.json pins the configuration the
results belong to, and a run with a different one is refused.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from glimprouter.errors import ConfigError, GlimpRouterError
from glimprouter.evals.datasets import Problem
from glimprouter.evals.grading import grade
from glimprouter.graph.builder import graph, run_config
from glimprouter.graph.context import RouterContext
from glimprouter.graph.invoke import run_question
from glimprouter.models import check_endpoints
from glimprouter.prompts import STEP_SEPARATOR

RESULTS_FILE = "results.jsonl"
CONFIG_FILE = "config.json"

# What must match for results to belong together (endpoint URLs and keys may change: a restarted
# server on another port serves the same model).
CONFIG_FIELDS = (
    "method",
    "threshold",
    "large_rate",
    "small_model",
    "large_model",
    "top_k",
    "step_max_tokens",
    "token_budget",
    "max_steps",
    "temperature",
    "top_p",
    "answer_model",
    "answer_max_tokens",
    "seed",
)


def run_identity(
    dataset: str, context: RouterContext, repeats: int, selection: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The configuration a results directory is pinned to; `selection` adds how its problems
    and settings were chosen (the split, a matched rate's source, a calibration)."""
    identity: dict[str, Any] = {"dataset": dataset, "repeats": repeats}
    identity.update({name: getattr(context, name) for name in CONFIG_FIELDS})
    identity.update(selection or {})
    return identity


def pin_configuration(output_dir: Path, identity: dict[str, Any]) -> None:
    """Write DIR/config.json, or refuse when DIR already holds results of another configuration."""
    path = output_dir / CONFIG_FILE
    if path.exists():
        recorded = json.loads(path.read_text())
        differences = [
            f"{key}: {recorded.get(key)!r} there, {identity.get(key)!r} now"
            for key in sorted(set(recorded) | set(identity))
            if recorded.get(key) != identity.get(key) and key != "repeats"
        ]
        if differences:
            raise ConfigError(
                f"{output_dir} holds results of another configuration ({'; '.join(differences)}): "
                "choose another --output"
            )
        if identity["repeats"] <= recorded.get("repeats", 0):
            return
    output_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(identity, indent=2) + "\n")


def read_results(output_dir: Path) -> list[dict[str, Any]]:
    """The records of DIR/results.jsonl; a line cut short by a kill is dropped from the file."""
    path = output_dir / RESULTS_FILE
    if not path.exists():
        return []
    records, keep = [], 0
    with path.open("rb") as lines:
        for line in lines:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                break
            keep += len(line)
    if keep != path.stat().st_size:
        with path.open("r+b") as file:
            file.truncate(keep)
    return records


def record_key(record: dict[str, Any]) -> tuple[str, int]:
    return (str(record["problem_id"]), int(record["repeat"]))


class ResultsWriter:
    """Appends one record per line and makes it durable before the next one."""

    def __init__(self, output_dir: Path) -> None:
        self._file = (output_dir / RESULTS_FILE).open("a", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()


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
) -> Tally:
    """Run every (problem, repeat) not yet recorded in `output_dir`, `concurrency` at a time;
    `selection` is recorded with the configuration (see `run_identity`)."""
    if repeats < 1 or concurrency < 1:
        raise ConfigError("--repeats and --concurrency must be at least 1")
    pin_configuration(output_dir, run_identity(dataset, context, repeats, selection))
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
    await check_endpoints(context)  # stop now, not after a hundred failures
    writer = ResultsWriter(output_dir)
    slots = asyncio.Semaphore(concurrency)

    async def one(problem: Problem, repeat: int) -> None:
        async with slots:
            record = await solve(problem, repeat, context, dataset)
        writer.write(record)
        tally.add(record)
        if on_record is not None:
            on_record(record, tally, len(pending))

    try:
        await asyncio.gather(*(one(problem, repeat) for problem, repeat in pending))
    finally:
        writer.close()
    return tally


async def solve(
    problem: Problem, repeat: int, context: RouterContext, dataset: str
) -> dict[str, Any]:
    """Run the graph on one problem and grade it: one results record (with `error` on failure)."""
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
        graded = await grade(problem, gradable_text(problem, result), result["final_answer"])
    except GlimpRouterError as error:
        return {**base, "error": str(error), "latency_s": time.perf_counter() - started}
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


def results_dirs(paths: Iterable[Path]) -> list[Path]:
    """Result directories named directly or found one level below (a sweep's root)."""
    found: list[Path] = []
    for path in paths:
        if (path / CONFIG_FILE).exists():
            found.append(path)
        else:
            found.extend(sorted(p.parent for p in path.glob(f"*/{CONFIG_FILE}")))
    if not found:
        raise ConfigError(
            f"no results under {[str(p) for p in paths]}: pass directories written by "
            "glimprouter eval or sweep"
        )
    return found


def realised_large_share(directories: Sequence[Path], dataset: str) -> float:
    """The share of steps the large model wrote in the recorded runs of `dataset` under
    `directories` (what `--large-rate match:DIR` matches)."""
    records = [
        record
        for directory in results_dirs(directories)
        for record in read_results(directory)
        if record.get("dataset") == dataset and not record.get("error")
    ]
    steps = sum(record["steps"] for record in records)
    if not steps:
        raise ConfigError(
            f"no recorded steps of {dataset} under {[str(d) for d in directories]}: match a run "
            "of the same dataset (--large-rate match:DIR)"
        )
    return sum(record["large_steps"] for record in records) / steps
