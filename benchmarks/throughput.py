"""Eval throughput at several concurrencies on a real vLLM server, against the server alone.

    python benchmarks/throughput.py --small-url URL --large-url URL [--problems 16] \
        [--concurrency 1,4,16] [--data-dir ../shared/data]

A CPU server's batches cost more as they grow, so no client can reach C x speed-up at every C.
To say where the server saturates, the same concurrencies drive a bare `openai` loop that
replays the shape of the first run: per problem, as many requests, one after the other, with as
many tokens (`ignore_eos`) as the eval spent on it. The eval's speed-up divided by the server's
own shows what the router leaves on the table, and the router's CPU share shows whether it
could be the bottleneck.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import openai
from _record import record, timed

from glimprouter import RouterContext
from glimprouter.evals.datasets import Problem, load_problems
from glimprouter.evals.runner import run_eval
from glimprouter.model_servers.client import CONTINUATION
from glimprouter.prompts import next_step_messages


@dataclass(frozen=True)
class Shape:
    """What the eval asked of the server for one problem."""

    question: str
    requests: int
    tokens_per_request: int


def shapes_of(results: Path, problems: list[Problem]) -> list[Shape]:
    """Per problem, the requests and completion tokens an eval recorded in `results`."""
    questions = {problem.id: problem.question for problem in problems}
    shapes = []
    for line in results.read_text().splitlines():
        row = json.loads(line)
        requests = row["small_requests"] + row["large_requests"]
        tokens = row["small_completion_tokens"] + row["large_completion_tokens"]
        shapes.append(
            Shape(questions[row["problem_id"]], requests, max(1, round(tokens / requests)))
        )
    return shapes


async def server_alone(context: RouterContext, shapes: list[Shape], concurrency: int) -> float:
    """Seconds for the small server to do the work of `shapes`, `concurrency` problems at once."""
    client = openai.AsyncOpenAI(
        base_url=context.small_base_url, api_key="EMPTY", max_retries=0, timeout=600
    )
    pending = iter(shapes)

    async def worker() -> None:
        for shape in pending:
            steps: list[str] = []
            for _ in range(shape.requests):
                reply = await client.chat.completions.create(
                    model=context.small_model,
                    messages=next_step_messages(shape.question, steps),
                    max_tokens=shape.tokens_per_request,
                    temperature=0.6,
                    extra_body={**CONTINUATION, "ignore_eos": True},
                )
                steps.append(reply.choices[0].message.content or "")

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    await client.close()
    return time.perf_counter() - started


def timed_eval(
    problems: list[Problem], context: RouterContext, output: Path, concurrency: int
) -> tuple[float, float]:
    """Wall seconds and this process's CPU seconds of one eval."""
    wall, cpu, tally = timed(
        run_eval(problems, context, output, dataset="math500", concurrency=concurrency)
    )
    assert tally.done == len(problems) and not tally.failed, tally
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small-url", required=True)
    parser.add_argument("--large-url", required=True)
    parser.add_argument("--problems", type=int, default=16)
    parser.add_argument("--concurrency", default="1,4,16")
    parser.add_argument("--token-budget", type=int, default=64)
    parser.add_argument(
        "--data-dir", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data"
    )
    args = parser.parse_args()
    problems = load_problems("math500", data_dir=args.data_dir, levels={1, 2}, limit=args.problems)
    context = RouterContext(
        small_base_url=args.small_url,
        large_base_url=args.large_url,
        threshold=1.0,
        token_budget=args.token_budget,
        step_max_tokens=32,
        answer_max_tokens=32,
        seed=0,
    )
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    runs: dict[int, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for concurrency in concurrencies:
            runs[concurrency] = timed_eval(
                problems, context, Path(scratch) / str(concurrency), concurrency
            )
        shapes = shapes_of(Path(scratch) / str(concurrencies[0]) / "results.jsonl", problems)
    bare = {c: asyncio.run(server_alone(context, shapes, c)) for c in concurrencies}
    lines = [
        "| concurrency | wall s | problems/min | speed-up | speed-up / C | router CPU "
        "| server alone: speed-up | speed-up / C | eval / server speed-up |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    saturated_at = None
    first, first_bare = runs[concurrencies[0]][0], bare[concurrencies[0]]
    for concurrency in concurrencies:
        seconds, cpu_seconds = runs[concurrency]
        speedup, server_speedup = first / seconds, first_bare / bare[concurrency]
        if saturated_at is None and server_speedup / concurrency < 0.8:
            saturated_at = concurrency
        lines.append(
            f"| {concurrency} | {seconds:.1f} | {60 * len(problems) / seconds:.1f} | "
            f"{speedup:.2f}x | {speedup / concurrency:.2f} | {100 * cpu_seconds / seconds:.0f}% "
            f"| {server_speedup:.2f}x | {server_speedup / concurrency:.2f} "
            f"| {speedup / server_speedup:.2f} |"
        )
    requests = sum(shape.requests for shape in shapes) / len(shapes)
    lines.append(
        f"\n{len(problems)} MATH-500 level 1-2 problems, token budget {args.token_budget}, "
        f"GlimpRouter threshold 1.0, {requests:.1f} requests per problem. Router CPU: the eval "
        "process's CPU time over its wall time (one of the machine's cores is 100%). Target: "
        "speed-up / C >= 0.8 until the server saturates. "
        + (
            f"The server alone falls below 0.8 x C at C = {saturated_at}."
            if saturated_at
            else "The server alone keeps 0.8 x C at every concurrency measured."
        )
    )
    record("Eval throughput by concurrency", lines)


if __name__ == "__main__":
    main()
