"""Load per key against a real serve-router of two workers (real uvicorn) and a fake model server
that holds the chains of the questions it is told to until the test releases them: one key's
burst runs at most --max-requests-per-key chains in the whole server, the rest wait or get a 429
naming the flags, another key is served meanwhile and is not turned away by the burst, and a
worker killed holding places frees them."""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.fakes import chat, fake_model_server
from tests.processes import stop, wait_until
from tests.routers import start_router

GUARD_S = 120
KEYS = ("alice-key", "bob-key")


class Holds:
    """The fake's fault hook: a model request about a question naming Alice waits until
    `release` is set; `now` counts the requests held at this moment and `peak` the most at once
    (each chain keeps one model request open at a time)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.now = 0
        self.peak = 0

    def __call__(self, index: int, request: dict[str, Any]) -> None:
        if "Alice" not in request["messages"][0]["content"]:
            return
        with self.lock:
            self.now += 1
            self.peak = max(self.peak, self.now)
        self.release.wait(GUARD_S)
        with self.lock:
            self.now -= 1


@pytest.fixture
def holds() -> Iterator[Holds]:
    hook = Holds()
    yield hook
    hook.release.set()


def router(url: str, *flags: str, env: dict[str, str] | None = None) -> tuple[Any, str]:
    keys = [flag for key in KEYS for flag in ("--api-key", key)]
    return start_router(url, None, 64, "--workers", "2", *keys, *flags, env=env)


async def post(base: str, key: str, question: str) -> httpx.Response:
    # A connection of its own each, so the requests spread over both workers.
    async with httpx.AsyncClient(timeout=GUARD_S) as http:
        return await http.post(
            f"{base}/chat/completions",
            json=chat(question),
            headers={"Authorization": f"Bearer {key}", "Connection": "close"},
        )


async def test_one_keys_burst_runs_at_most_its_bound_in_the_whole_server(holds):
    with fake_model_server(fault=holds) as server:
        process, base = router(
            server.url, "--max-requests-per-key", "3", "--max-concurrency", "8",
            "--max-waiting", "16",
        )  # fmt: skip
        try:
            burst = [asyncio.ensure_future(post(base, KEYS[0], f"Alice {n}")) for n in range(200)]
            # 3 run, 16 wait: the other 181 are answered at once.
            deadline = asyncio.get_running_loop().time() + GUARD_S
            while (answered := sum(task.done() for task in burst)) < 181:
                now = asyncio.get_running_loop().time()
                assert now < deadline, f"{answered} answered, {holds.now} chains held"
                await asyncio.wait(burst, return_when=asyncio.FIRST_COMPLETED, timeout=1)
            await asyncio.to_thread(
                wait_until, lambda: holds.now == 3, GUARD_S, "three chains held"
            )
            refused = [task.result() for task in burst if task.done()]
            waited = [task for task in burst if not task.done()]
            assert {reply.status_code for reply in refused} == {429}
            message = refused[0].json()["error"]["message"]
            assert "--max-requests-per-key" in message and "--max-waiting" in message
            # Another key is served while the burst holds its places and its queue.
            other = await post(base, KEYS[1], "Bob asks what 2 + 2 is")
            assert other.status_code == 200, other.text
            assert holds.peak == 3
            holds.release.set()
            served = await asyncio.gather(*waited)
            assert [reply.status_code for reply in served] == [200] * 19
            assert holds.peak == 3  # the waiting ones ran three at a time
        finally:
            stop(process)


async def test_a_burst_of_one_key_does_not_turn_away_another_keys_first_request(holds):
    with fake_model_server(fault=holds) as server:
        process, base = router(server.url, "--max-concurrency", "4", "--max-waiting", "4")
        try:
            burst = [asyncio.ensure_future(post(base, KEYS[0], f"Alice {n}")) for n in range(8)]
            await asyncio.to_thread(wait_until, lambda: holds.now == 4, GUARD_S, "four chains held")
            await asyncio.to_thread(
                wait_until, lambda: waiting(base) == 4, GUARD_S, "four chains waiting"
            )
            # Bob's first request, with the waiting room full of Alice's: it takes the place of
            # her newest, which gets the 429.
            other = asyncio.ensure_future(post(base, KEYS[1], "Bob asks what 2 + 2 is"))
            done, _ = await asyncio.wait(
                burst, return_when=asyncio.FIRST_COMPLETED, timeout=GUARD_S
            )
            assert [task.result().status_code for task in done] == [429]
            assert not other.done()
            holds.release.set()
            assert (await other).status_code == 200
            statuses = collections.Counter(r.status_code for r in await asyncio.gather(*burst))
            assert statuses == {200: 7, 429: 1}
        finally:
            stop(process)


def waiting(base: str) -> float:
    """The chains waiting in the whole server: /metrics sums every worker's."""
    reply = httpx.get(
        base.removesuffix("/v1") + "/metrics",
        headers={"Authorization": f"Bearer {KEYS[0]}", "Connection": "close"},
    )
    return sum(
        sample.value
        for family in text_string_to_metric_families(reply.text)
        for sample in family.samples
        if sample.name == "glimprouter_chains_waiting"
    )


def worker_pids(router_pid: int) -> set[int]:
    """The router's uvicorn workers: its children spawned by multiprocessing (not its resource
    tracker)."""
    with open(f"/proc/{router_pid}/task/{router_pid}/children") as children:
        pids = {int(pid) for pid in children.read().split()}
    workers = set()
    for pid in pids:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as command:
                if b"spawn_main" in command.read():
                    workers.add(pid)
        except FileNotFoundError:
            continue  # it ended meanwhile
    return workers


async def test_workers_killed_holding_places_free_them(holds, tmp_path):
    with fake_model_server(fault=holds) as server:
        process, base = router(server.url, "--max-concurrency", "2", "--max-waiting", "0")
        try:
            held = [asyncio.ensure_future(post(base, KEYS[n], f"Alice {n}")) for n in range(2)]
            await asyncio.to_thread(wait_until, lambda: holds.now == 2, GUARD_S, "two chains held")
            full = await post(base, KEYS[0], "Bob finds the server full")
            assert full.status_code == 429
            before = worker_pids(process.pid)
            for pid in before:
                os.kill(pid, signal.SIGKILL)
            await asyncio.gather(*held, return_exceptions=True)  # their connections dropped
            # uvicorn replaces both; their places were freed when their connections closed.
            await asyncio.to_thread(
                wait_until,
                lambda: len(worker_pids(process.pid) - before) == 2,
                GUARD_S,
                "two new workers",
            )
            served = await asyncio.to_thread(
                wait_until,
                lambda: _served(base),
                GUARD_S,
                "a new worker serving a chain",
            )
            assert served.status_code == 200, served.text
        finally:
            stop(process)


def _served(base: str) -> httpx.Response | None:
    """A chain's reply, or None while no worker accepts the connection yet."""
    try:
        return httpx.post(
            f"{base}/chat/completions",
            json=chat("Bob asks again"),
            headers={"Authorization": f"Bearer {KEYS[1]}", "Connection": "close"},
            timeout=GUARD_S,
        )
    except httpx.TransportError:
        return None
