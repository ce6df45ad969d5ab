"""Requests and prompt tokens per small step and per large step, probe versus streamed glimpse,
on a real vLLM server.

    python benchmarks/requests_per_step.py --small-url URL --large-url URL [--questions 5]

All-small runs (huge threshold, the answer on the large model) give the cost of a small step;
all-large runs (threshold 0) the cost of a large step, glimpse included.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses

from _record import record

from glimprouter import RouterContext, graph, run_config

QUESTIONS = [
    "What is 12 + 7 * 3?",
    "A train travels 60 km in 45 minutes. What is its speed in km/h?",
    "How many positive divisors does 36 have?",
    "Simplify (x^2 - 9) / (x - 3).",
    "What is the remainder when 2^10 is divided by 7?",
    "Solve for x: 3x - 5 = 16.",
    "What is the sum of the interior angles of a hexagon?",
    "Convert 0.375 to a fraction in lowest terms.",
]


async def costs(context: RouterContext, questions: list[str]) -> dict[str, float]:
    """Per step: small requests, large requests, small prompt tokens, large prompt tokens."""
    totals = dict.fromkeys(("steps", "small_req", "large_req", "small_prompt", "large_prompt"), 0)
    for question in questions:
        result = await graph.ainvoke(
            {"question": question}, context=context, config=run_config(context)
        )
        small = result["usage"].get("small", {})
        large = result["usage"].get("large", {})
        steps = result["steps"]
        answer_prompt = large.get("prompt_tokens", 0) - sum(
            s["prompt_tokens"] for s in steps if s["model"] == "large"
        )
        totals["steps"] += len(steps)
        totals["small_req"] += small.get("requests", 0)
        totals["large_req"] += large.get("requests", 0) - 1  # the answer is not a step
        totals["small_prompt"] += small.get("prompt_tokens", 0)
        totals["large_prompt"] += large.get("prompt_tokens", 0) - answer_prompt
    return {key: value / totals["steps"] for key, value in totals.items() if key != "steps"} | {
        "steps": totals["steps"]
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small-url", required=True)
    parser.add_argument("--large-url", required=True)
    parser.add_argument("--questions", type=int, default=5)
    parser.add_argument("--token-budget", type=int, default=256)
    args = parser.parse_args()
    base = RouterContext(
        small_base_url=args.small_url,
        large_base_url=args.large_url,
        token_budget=args.token_budget,
        answer_max_tokens=32,
        seed=0,
    )
    questions = QUESTIONS[: args.questions]
    lines = [
        "| glimpse | step written by | steps | requests per step (small + large) | "
        "prompt tokens per step (small + large) |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for mode in ("probe", "stream"):
        for writer, threshold in (("small", 1e9), ("large", 0.0)):
            context = dataclasses.replace(base, glimpse_mode=mode, threshold=threshold)
            c = asyncio.run(costs(context, questions))
            lines.append(
                f"| {mode} | {writer} | {c['steps']:.0f} | "
                f"**{c['small_req'] + c['large_req']:.2f}** ({c['small_req']:.2f} + "
                f"{c['large_req']:.2f}) | {c['small_prompt'] + c['large_prompt']:.0f} "
                f"({c['small_prompt']:.0f} + {c['large_prompt']:.0f}) |"
            )
    lines.append("\nTarget: 1.0 request per small step with the streamed glimpse.")
    record("Requests and prompt tokens per step: probe vs streamed glimpse", lines)


if __name__ == "__main__":
    main()
