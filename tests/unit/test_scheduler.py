"""The Scheduler alone (pure asyncio): places per key, round-robin grants across keys, the
longest queue shedding when the waiting room is full, and a waiter that leaves."""

from __future__ import annotations

import asyncio
import os
import tempfile

import pytest

from glimprouter.endpoint.admission import shared_scheduler
from glimprouter.endpoint.errors import RequestError
from glimprouter.endpoint.load import Scheduler

A, B, C = b"a", b"b", b"c"


async def settle() -> None:
    """Let every task run until it waits on the Scheduler."""
    for _ in range(5):
        await asyncio.sleep(0)


def waiters(scheduler: Scheduler, *keys: bytes) -> list[asyncio.Task]:
    return [asyncio.ensure_future(scheduler.admit(key)) for key in keys]


async def test_a_key_runs_at_most_its_bound_and_freed_places_go_round_robin():
    scheduler = Scheduler(max_concurrency=3, max_waiting=10, max_per_key=2)
    tasks = waiters(scheduler, A, A, A, A, B, B, C)
    await settle()
    granted = [task.done() for task in tasks]
    assert granted == [True, True, False, False, True, False, False]
    assert (scheduler.running, scheduler.waiting) == (3, 4)
    order = []
    for released in (A, A, B, B):
        scheduler.release(released)
        await settle()
        newly = [n for n, task in enumerate(tasks) if task.done() and n not in order]
        order += [n for n in newly if not granted[n]]
    # A's third, then B's second, C's, A's fourth: one key at a time.
    assert order == [2, 5, 6, 3]


async def test_a_full_waiting_room_sheds_the_longest_queue_not_a_newcomer():
    scheduler = Scheduler(max_concurrency=1, max_waiting=2, max_per_key=8)
    running, *queued = waiters(scheduler, A, A, A)
    await settle()
    (newcomer,) = waiters(scheduler, B)
    await settle()
    with pytest.raises(RequestError, match="--max-waiting"):
        await queued[1]  # A's newest gave its place to B's first
    assert not newcomer.done() and scheduler.waiting == 2
    # B's second would make its queue the longest: it is refused itself.
    with pytest.raises(RequestError, match="capacity"):
        await scheduler.admit(B)
    scheduler.release(A)
    await settle()
    assert queued[0].done() and not newcomer.done()
    scheduler.release(A)
    await settle()
    assert newcomer.done() and (scheduler.running, scheduler.waiting) == (1, 0)


async def test_a_waiter_that_leaves_takes_no_place():
    scheduler = Scheduler(max_concurrency=1, max_waiting=4, max_per_key=8)
    first, gone, last = waiters(scheduler, A, B, C)
    await settle()
    gone.cancel()
    await settle()
    assert scheduler.waiting == 1
    scheduler.release(A)
    await settle()
    assert last.done() and scheduler.running == 1


async def test_without_keys_only_max_concurrency_bounds():
    scheduler = Scheduler(max_concurrency=3, max_waiting=0, max_per_key=1)
    tasks = waiters(scheduler, None, None, None)
    await settle()
    assert all(task.done() for task in tasks)
    with pytest.raises(RequestError, match="--max-concurrency"):
        await scheduler.admit(None)


def test_the_admission_socket_opens_under_a_tmpdir_too_deep_for_a_unix_socket(
    tmp_path, monkeypatch
):
    deep = tmp_path / ("d" * 100)
    deep.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(deep))
    with shared_scheduler(Scheduler(max_concurrency=1, max_waiting=0, max_per_key=1)) as path:
        assert os.path.exists(path) and len(os.fsencode(path)) <= 107
    assert not os.path.exists(path)
