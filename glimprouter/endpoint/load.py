"""Load: the chains of thought in flight, bounded by --max-concurrency with at most --max-waiting
waiting their turn, and the streams each API key holds open (--max-streams-per-key)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator

from glimprouter.endpoint.errors import RequestError

# What a refused client is told to wait before it tries again; the OpenAI SDKs honour it.
RETRY_AFTER_S = 1


class Load:
    """Chains of thought in flight, bounded when max_concurrency is set: up to max_waiting more
    wait for a place, and any beyond are refused with a 429 before anything runs.
    `on_change(running, waiting)` is told of every change (the metrics' gauges)."""

    def __init__(
        self,
        max_concurrency: int | None,
        max_waiting: int,
        on_change: Callable[[int, int], None] = lambda running, waiting: None,
    ) -> None:
        self._semaphore = asyncio.Semaphore(max_concurrency) if max_concurrency else None
        self.max_concurrency = max_concurrency
        self.max_waiting = max_waiting
        self._on_change = on_change
        self.running = 0
        self.waiting = 0
        self.peak_running = 0

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one place among the running chains for the duration of a run."""
        if self._semaphore is not None and self._semaphore.locked():
            if self.waiting >= self.max_waiting:
                raise too_many(
                    f"the router is at capacity ({self.max_concurrency} chains running, "
                    f"{self.waiting} waiting: --max-concurrency, --max-waiting)"
                )
        self.waiting += 1
        self._on_change(self.running, self.waiting)
        try:
            if self._semaphore is not None:
                await self._semaphore.acquire()
        except BaseException:  # cancelled while waiting: the client left
            self.waiting -= 1
            self._on_change(self.running, self.waiting)
            raise
        self.waiting -= 1
        self.running += 1
        self.peak_running = max(self.peak_running, self.running)
        self._on_change(self.running, self.waiting)
        try:
            yield
        finally:
            self.running -= 1
            if self._semaphore is not None:
                self._semaphore.release()
            self._on_change(self.running, self.waiting)


class OpenStreams:
    """The streams each API key holds open (by the key's digest, never the key), at most
    max_per_key each."""

    def __init__(self, max_per_key: int) -> None:
        self.max_per_key = max_per_key
        self._open: collections.Counter[bytes] = collections.Counter()

    @contextlib.contextmanager
    def held(self, key: bytes) -> Iterator[None]:
        """Count one open stream of `key` while the block runs, or refuse it with a 429."""
        if self._open[key] >= self.max_per_key:
            raise too_many(
                f"this API key holds {self._open[key]} open streams, the most it may "
                "(--max-streams-per-key): wait for one to end"
            )
        self._open[key] += 1
        try:
            yield
        finally:
            self._open[key] -= 1
            if not self._open[key]:
                del self._open[key]


def too_many(why: str) -> RequestError:
    """A 429 shaped as OpenAI's rate-limit errors, with a Retry-After."""
    return RequestError(
        429,
        f"{why}; retry after {RETRY_AFTER_S} s",
        kind="requests",
        code="rate_limit_exceeded",
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )
