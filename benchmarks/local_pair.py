"""End to end on the local real pair (Qwen2.5-Coder 0.5B small, 1.5B large): accuracy, latency
and memory for small-only, large-only and GlimpRouter at two thresholds on MATH-500 level 1-2.

    python benchmarks/local_pair.py [--problems 30] [--thresholds 0.5,1.0] [--concurrency 2] \
        [--output runs/local-pair]

Starts both servers (one core each), runs each method through `run_eval` (so a rerun resumes),
then prints the report table, the latency ratio to large-only, and peak memory.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import resource
from pathlib import Path

from _record import record

from glimprouter import RouterContext
from glimprouter.evals.datasets import load_problems
from glimprouter.evals.report import load_rows, markdown, paired_markdown, pareto_plot
from glimprouter.evals.runner import run_eval
from glimprouter.vllm_launcher.local_models import LOCAL_MODELS, LOCAL_PAIR
from glimprouter.vllm_launcher.pair import local_pair_specs, serve


def peak_rss_gib(pid: int) -> float:
    """Sum of the peak resident sets (VmHWM) of a process and its descendants."""
    total_kib, pending = 0, [pid]
    while pending:
        current = pending.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            for task in Path(f"/proc/{current}/task").iterdir():
                pending += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
        total_kib += next(
            int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM")
        )
    return total_kib / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=30)
    parser.add_argument("--thresholds", default="0.5,1.0")
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--token-budget", type=int, default=1024)
    parser.add_argument("--answer-max-tokens", type=int, default=256)
    parser.add_argument("--output", type=Path, default=Path("runs/local-pair"))
    parser.add_argument(
        "--pair", default=",".join(LOCAL_PAIR), help=f"small,large among {sorted(LOCAL_MODELS)}"
    )
    parser.add_argument(
        "--data-dir", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data"
    )
    args = parser.parse_args()
    problems = load_problems("math500", data_dir=args.data_dir, levels={1, 2}, limit=args.problems)
    methods = [("small-only", 1.0), ("large-only", 1.0)] + [
        ("glimprouter", float(t)) for t in args.thresholds.split(",")
    ]
    pair = tuple(args.pair.split(","))
    with serve(local_pair_specs(pair=pair)) as (small, large):
        base = RouterContext(
            small_base_url=small.base_url,
            large_base_url=large.base_url,
            token_budget=args.token_budget,
            answer_max_tokens=args.answer_max_tokens,
            seed=0,
        )
        directories = []
        for method, threshold in methods:
            context = dataclasses.replace(base, method=method, threshold=threshold)
            directory = args.output / f"{method}-t{threshold:g}"
            tally = asyncio.run(
                run_eval(
                    problems, context, directory, dataset="math500", concurrency=args.concurrency
                )
            )
            print(
                f"{directory}: {tally.done} new, accuracy {100 * tally.accuracy:.1f}%", flush=True
            )
            directories.append(directory)
        memory = {"small server": peak_rss_gib(small.pid), "large server": peak_rss_gib(large.pid)}
    memory["router process"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    rows = load_rows(directories)
    lines = [markdown(rows), paired_markdown(rows, "large-only")]
    lines += [
        "",
        f"{len(problems)} MATH-500 level 1-2 problems, token budget "
        f"{args.token_budget}, answer {args.answer_max_tokens} tokens, concurrency "
        f"{args.concurrency}, streamed glimpse. Target: "
        "GlimpRouter at or under 0.7x large-only latency.",
        "",
        "Peak memory: " + ", ".join(f"{name} {gib:.1f} GiB" for name, gib in memory.items()),
    ]
    plot = pareto_plot(rows, args.output / "pareto.png")
    lines.append(f"\nPareto plot: `{plot}`")
    record("End to end on the local pair (MATH-500 level 1-2)", lines)


if __name__ == "__main__":
    main()
