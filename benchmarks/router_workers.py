"""serve-router throughput at 1 and 2 workers, router-CPU bound (an instant fake model server in
its own process, one per role).

    python benchmarks/router_workers.py [--requests 192] [--steps 8] [--clients 16]

`--clients` requests are kept in flight, each on a connection of its own, so the kernel spreads
them over the workers. The ratio that counts is 2 workers over 1: what a second router process
buys when the router's CPU is the bottleneck. On a 2-core machine the fake servers and this
client share the cores with the workers, so it is a lower bound of what two free cores give.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time

import httpx
from _record import record
from overhead import start

BODY = {"model": "glimprouter", "messages": [{"role": "user", "content": "What is 2 + 2?"}]}


def start_router(small_url: str, large_url: str, workers: int) -> tuple[subprocess.Popen, str]:
    """serve-router with `workers`; its base URL once every worker is ready."""
    command = [sys.executable, "-m", "glimprouter.cli", "serve-router", "--port", "0",
               "--small-url", small_url, "--large-url", large_url, "--threshold", "1.0",
               "--workers", str(workers)]  # fmt: skip
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith("serving "):
            return process, line.split()[3]
    raise SystemExit(f"serve-router --workers {workers} ended before it was ready")


async def load(base_url: str, requests: int, clients: int) -> float:
    """Wall seconds to have `requests` chat completions answered, `clients` at a time."""
    remaining = iter(range(requests))

    async def client() -> None:
        async with httpx.AsyncClient(timeout=600, headers={"Connection": "close"}) as http:
            for _ in remaining:
                reply = await http.post(f"{base_url}/chat/completions", json=BODY)
                reply.raise_for_status()

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=192)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--clients", type=int, default=16)
    args = parser.parse_args()
    small_url, large_url = start(args.steps), start(args.steps)
    seconds: dict[int, float] = {}
    for workers in (1, 2):
        router, base_url = start_router(small_url, large_url, workers)
        try:
            asyncio.run(load(base_url, args.clients * 2, args.clients))  # warm: imports, pools
            seconds[workers] = asyncio.run(load(base_url, args.requests, args.clients))
        finally:
            router.terminate()
            router.wait()
    lines = ["| workers | wall s | chains/s | vs 1 worker |", "| ---: | ---: | ---: | ---: |"]
    for workers, wall in seconds.items():
        lines.append(
            f"| {workers} | {wall:.1f} | {args.requests / wall:.1f} | {seconds[1] / wall:.2f}x |"
        )
    lines.append(
        f"\n{args.requests} chat completions x {args.steps} steps, {args.clients} clients in "
        "flight, each request on a new connection; two instant fake model servers in their own "
        "processes on the same 2 cores."
    )
    record("serve-router: 1 vs 2 workers (router-CPU bound)", lines)


if __name__ == "__main__":
    main()
