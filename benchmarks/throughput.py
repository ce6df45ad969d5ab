"""Eval throughput at several concurrencies on a real vLLM server.

    python benchmarks/throughput.py --small-url URL --large-url URL [--problems 16] \
        [--concurrency 1,4,16] [--data-dir ../shared/data]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from _record import record

from glimprouter import RouterContext
from glimprouter.evals.datasets import load_problems
from glimprouter.evals.runner import run_eval


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
        "| concurrency | wall s | problems/min | speed-up | speed-up / C |",
        "| ---: | ---: | ---: | ---: | ---: |",
    ]
    first = None
    for concurrency in (int(c) for c in args.concurrency.split(",")):
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
        lines.append(
            f"| {concurrency} | {seconds:.1f} | {60 * len(problems) / seconds:.1f} | "
            f"{speedup:.2f}x | {speedup / concurrency:.2f} |"
        )
    lines.append(
        f"\n{len(problems)} MATH-500 level 1-2 problems, token budget "
        f"{args.token_budget}, GlimpRouter threshold 1.0. Target: speed-up / C >= 0.8 "
        "until the server saturates."
    )
    record("Eval throughput by concurrency", lines)


if __name__ == "__main__":
    main()
