"""Load: the chains of thought in flight, at most --max-concurrency at once and
--max-requests-per-key of one API key, with at most --max-waiting waiting their turn, granted
fairly across keys. Under --workers N one Scheduler in the serve-router process holds the places
of every worker (endpoint/admission.py), so the bounds are the server's, not N times them."""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Protocol

from glimprouter.endpoint.errors import RequestError

# What a refused client is told to wait before it tries again; the OpenAI SDKs honour it.
RETRY_AFTER_S = 1

Key = bytes | None
"""Whose request: an API key's digest, or None with no keys set (one client)."""


class Scheduler:
    """Places among the running chains. A request runs at once when a place is free and its key
    runs fewer than `max_per_key`; else it waits in its key's FIFO queue. A freed place goes
    round-robin to the next key with a request waiting that may run, so one key's burst waits
    behind it and not in front of everyone else's. When `max_waiting` requests already wait, the
    newest request of the longest queue is refused (it is the newcomer's unless another key
    waits more): a burst cannot turn away another key's first request. With no keys set (key
    None) every request is the one client's, bound by `max_concurrency` alone."""

    def __init__(self, max_concurrency: int, max_waiting: int, max_per_key: int) -> None:
        self.max_concurrency = max_concurrency
        self.max_waiting = max_waiting
        self.max_per_key = max_per_key
        self.running = 0
        self.waiting = 0
        self._running: collections.Counter[Key] = collections.Counter()
        # Each key's waiting requests, oldest first; the dict's order is the round-robin's.
        self._queues: dict[Key, collections.deque[asyncio.Future[None]]] = {}

    async def admit(self, key: Key) -> None:
        """Wait for a place for one of `key`'s requests (then `release` it), or a 429."""
        if not self._queues.get(key) and self._may_run(key):
            self._start(key)
            return
        if self.waiting >= self.max_waiting:
            self._shed(key)
        place: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queues.setdefault(key, collections.deque()).append(place)
        self.waiting += 1
        try:
            await place
        except asyncio.CancelledError:  # the client left
            if place.done() and not place.cancelled() and place.exception() is None:
                self.release(key)  # granted as it was cancelled: the place is not used
            else:
                self._forget(key, place)
            raise

    def release(self, key: Key) -> None:
        """A run of `key` ended: its place goes to the next key in turn."""
        self.running -= 1
        self._running[key] -= 1
        if not self._running[key]:
            del self._running[key]
        self._grant()

    def _may_run(self, key: Key) -> bool:
        return self.running < self.max_concurrency and (
            key is None or self._running[key] < self.max_per_key
        )

    def _start(self, key: Key) -> None:
        self.running += 1
        self._running[key] += 1

    def _grant(self) -> None:
        for key in list(self._queues):
            if self.running >= self.max_concurrency:
                return
            if self._may_run(key):
                queue = self._queues.pop(key)
                self.waiting -= 1
                self._start(key)
                queue.popleft().set_result(None)
                if queue:
                    self._queues[key] = queue  # back of the round

    def _shed(self, key: Key) -> None:
        """Make room for one more waiting request of `key`, or refuse it."""
        mine = len(self._queues.get(key, ()))
        longest = max(self._queues, key=lambda other: len(self._queues[other]), default=None)
        refusal = too_many(
            f"the router is at capacity ({self.running} chains running, {self.waiting} waiting: "
            "--max-concurrency, --max-waiting, --max-requests-per-key)"
        )
        if longest is None or len(self._queues[longest]) <= mine + 1:
            raise refusal
        self.waiting -= 1
        self._queues[longest].pop().set_exception(refusal)

    def _forget(self, key: Key, place: asyncio.Future[None]) -> None:
        queue = self._queues.get(key)
        if queue is not None and place in queue:
            queue.remove(place)
            self.waiting -= 1
            if not queue:
                del self._queues[key]


class Gate(Protocol):
    """Where a process gets its places: a Scheduler of its own, or its serve-router's."""

    def slot(self, key: Key) -> contextlib.AbstractAsyncContextManager[None]: ...


class LocalGate:
    """The places of a Scheduler in this process."""

    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler

    @contextlib.asynccontextmanager
    async def slot(self, key: Key) -> AsyncIterator[None]:
        await self.scheduler.admit(key)
        try:
            yield
        finally:
            self.scheduler.release(key)


class Load:
    """This process's chains running and waiting for a place from `gate`, and the most run at
    once (/health); `on_change(running, waiting)` is told of every change (the metrics'
    gauges)."""

    def __init__(
        self, gate: Gate, on_change: Callable[[int, int], None] = lambda running, waiting: None
    ) -> None:
        self._gate = gate
        self._on_change = on_change
        self.running = 0
        self.waiting = 0
        self.peak_running = 0

    @contextlib.asynccontextmanager
    async def slot(self, key: Key) -> AsyncIterator[None]:
        """Hold one place among the running chains for the duration of a run of `key`."""
        self._count(waiting=1)
        entered = False
        try:
            async with self._gate.slot(key):
                self._count(waiting=-1, running=1)
                entered = True
                self.peak_running = max(self.peak_running, self.running)
                yield
        finally:
            if entered:
                self._count(running=-1)
            else:
                self._count(waiting=-1)

    def _count(self, running: int = 0, waiting: int = 0) -> None:
        self.running += running
        self.waiting += waiting
        self._on_change(self.running, self.waiting)


def too_many(why: str) -> RequestError:
    """A 429 shaped as OpenAI's rate-limit errors, with a Retry-After."""
    return RequestError(
        429,
        f"{why}; retry after {RETRY_AFTER_S} s",
        kind="requests",
        code="rate_limit_exceeded",
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )
