"""Eval throughput at several concurrencies on a real vLLM server, against the server alone.

    python benchmarks/throughput.py --small-url URL --large-url URL [--problems 16] \
        [--concurrency 1,4,16] [--data-dir ../shared/data]

A CPU server's batches cost more as they grow, so no client can reach C x speed-up at every C.
To say where the server saturates, the same concurrencies drive a bare `openai` loop that asks
the small server for the same number of tokens per problem (fixed-length requests, `ignore_eos`);
the eval's speed-up divided by the server's own shows what the router leaves on the table.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import openai
from _record import record

from glimprouter import RouterContext
from glimprouter.evals.datasets import load_problems
from glimprouter.evals.runner import run_eval
from glimprouter.models import CONTINUATION
from glimprouter.prompts import next_step_messages


async def server_alone(
    context: RouterContext, questions: list[str], concurrency: int, requests: int
) -> float:
    """Seconds for the small server to write `requests` x step_max_tokens tokens per question,
    one request after the other, with `concurrency` questions in flight."""
    client = openai.AsyncOpenAI(
        base_url=context.small_base_url, api_key="EMPTY", max_retries=0, timeout=600
    )
    pending = iter(questions)

    async def worker() -> None:
        for question in pending:
            steps: list[str] = []
            for _ in range(requests):
                reply = await client.chat.completions.create(
                    model=context.small_model,
                    messages=next_step_messages(question, steps),
                    max_tokens=context.step_max_tokens,
                    temperature=0.6,
                    extra_body={**CONTINUATION, "ignore_eos": True},
                )
                steps.append(reply.choices[0].message.content or "")

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    await client.close()
    return time.perf_counter() - started


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
    lines = [
        "| concurrency | wall s | problems/min | speed-up | speed-up / C "
        "| server alone: speed-up | speed-up / C | eval / server speed-up |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    questions = [problem.question for problem in problems]
    # Same tokens per problem as the eval's reasoning budget plus its answer, in 32-token requests.
    requests = -(-(context.token_budget + context.answer_max_tokens) // context.step_max_tokens)
    bare = {c: asyncio.run(server_alone(context, questions, c, requests)) for c in concurrencies}
    saturated_at = None
    first = None
    for concurrency in concurrencies:
        with tempfile.TemporaryDirectory() as output:
            started = time.perf_counter()
            tally = asyncio.run(
                run_eval(
                    problems, context, Path(output), dataset="math500", concurrency=concurrency
                )
            )
            seconds = time.perf_counter() - started
        assert tally.done == len(problems) and not tally.failed, tally
        first = first or seconds
        speedup = first / seconds
        server_speedup = bare[concurrencies[0]] / bare[concurrency]
        if saturated_at is None and server_speedup / concurrency < 0.8:
            saturated_at = concurrency
        lines.append(
            f"| {concurrency} | {seconds:.1f} | {60 * len(problems) / seconds:.1f} | "
            f"{speedup:.2f}x | {speedup / concurrency:.2f} | {server_speedup:.2f}x | "
            f"{server_speedup / concurrency:.2f} | {speedup / server_speedup:.2f} |"
        )
    lines.append(
        f"\n{len(problems)} MATH-500 level 1-2 problems, token budget "
        f"{args.token_budget}, GlimpRouter threshold 1.0. Server alone: {requests} requests "
        f"of {context.step_max_tokens} tokens per problem. Target: speed-up / C >= 0.8 "
        "until the server saturates. "
        + (
            f"The server alone falls below 0.8 x C at C = {saturated_at}."
            if saturated_at
            else "The server alone keeps 0.8 x C at every concurrency measured."
        )
    )
    record("Eval throughput by concurrency", lines)


if __name__ == "__main__":
    main()
