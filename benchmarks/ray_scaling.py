"""Eval throughput on a Ray cluster of this machine: 1 vs 2 Ray workers, and the local runner,
router-CPU bound (instant fake model servers, one per role, each in its own process).

    python benchmarks/ray_scaling.py [--problems 384] [--steps 8] [--concurrency 8]

Each worker (and the local runner) keeps --concurrency problems in flight. The ratio that counts
is 2 workers over 1: what a second router process buys when the router's CPU is the bottleneck
(target >= 1.6x). On a 2-core machine the two fake servers and Ray's own processes share the
cores with the workers, so this is a lower bound of what two machines' cores give. Each Ray
run includes starting its actors (their imports, about 5 s), as a user's eval does.
"""

from __future__ import annotations

import argparse
import multiprocessing
import tempfile
import time
from pathlib import Path

import ray
from _record import record
from overhead import start

from glimprouter import RouterContext
from glimprouter.evals.datasets import Problem
from glimprouter.evals.ray_cluster import RayCluster
from glimprouter.evals.runner import run_eval
from glimprouter.stopping import run


def timed_eval(
    problems: list[Problem], context: RouterContext, output: Path, concurrency: int, cluster
) -> float:
    """Wall seconds of one eval (all of it: the driver writes every record)."""
    started = time.perf_counter()
    tally = run(
        run_eval(
            problems, context, output, dataset="bench", concurrency=concurrency, cluster=cluster
        )
    )
    assert tally.done == len(problems) and not tally.failed, tally
    return time.perf_counter() - started


def _half(job: tuple[list[Problem], RouterContext, Path, int]) -> float:
    problems, context, output, concurrency = job
    return timed_eval(problems, context, output, concurrency, None)


def two_processes(
    problems: list[Problem], context: RouterContext, scratch: Path, concurrency: int
) -> float:
    """Wall seconds for two independent local runners, half the problems each: what two router
    processes give on this machine without Ray (its ceiling for this workload)."""
    halves = [problems[: len(problems) // 2], problems[len(problems) // 2 :]]
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        warm = [
            (half[:concurrency], context, scratch / f"warm-{i}", concurrency)
            for i, half in enumerate(halves)
        ]
        pool.map(_half, warm)
        started = time.perf_counter()
        pool.map(
            _half,
            [(half, context, scratch / f"half-{i}", concurrency) for i, half in enumerate(halves)],
        )
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=384)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    small_url, large_url = start(args.steps), start(args.steps)
    context = RouterContext(small_base_url=small_url, large_base_url=large_url, threshold=1.0)
    # Multiple choice, graded by a regex: math-verify's sympy would spend about 35 ms of CPU on
    # each problem's grade, a third of what its 8 router steps cost, on top of the router.
    problems = [
        Problem(
            "bench",
            str(index),
            f"Which letter comes first? (A) a (B) b [{index}]",
            "multiple_choice",
            "A",
        )
        for index in range(args.problems)
    ]
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    seconds: dict[str, float] = {}
    try:
        with tempfile.TemporaryDirectory() as scratch:
            runs = {
                "local runner": None,
                "Ray, 1 worker": RayCluster(workers=1),
                "Ray, 2 workers": RayCluster(workers=2),
            }
            # The driver's imports and connections; each Ray run starts its own actors, whose
            # imports (about 5 s of CPU) count in its time, as they do in a user's eval.
            warm = problems[: args.concurrency * 2]
            timed_eval(warm, context, Path(scratch) / "warm", args.concurrency, None)
            for name, cluster in runs.items():
                output = Path(scratch) / name
                seconds[name] = timed_eval(problems, context, output, args.concurrency, cluster)
            seconds["two local runner processes (no Ray)"] = two_processes(
                problems, context, Path(scratch), args.concurrency
            )
    finally:
        ray.shutdown()
    steps = args.problems * args.steps
    lines = [
        "| runner | wall s | steps/s | vs Ray, 1 worker |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, wall in seconds.items():
        lines.append(
            f"| {name} | {wall:.1f} | {steps / wall:.0f} | {seconds['Ray, 1 worker'] / wall:.2f}x |"
        )
    lines.append(
        f"\n{args.problems} problems x {args.steps} steps, --concurrency {args.concurrency} per "
        "worker, two instant fake model servers in their own processes, a local Ray cluster of "
        "2 CPUs. Target: 2 workers >= 1.6x 1 worker; two local runner processes, half the "
        "problems each, show what this machine gives two router processes at all."
    )
    record("Evals on Ray: 1 vs 2 workers (router-CPU bound)", lines)


if __name__ == "__main__":
    main()
