"""Concurrency: the chains of thought in flight, bounded by --max-concurrency."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable


class Load:
    """Chains of thought in flight, bounded when max_concurrency is set (the rest wait).
    `on_change(running, waiting)` is told of every change (the metrics' gauges)."""

    def __init__(
        self,
        max_concurrency: int | None,
        on_change: Callable[[int, int], None] = lambda running, waiting: None,
    ) -> None:
        self._semaphore = asyncio.Semaphore(max_concurrency) if max_concurrency else None
        self._on_change = on_change
        self.running = 0
        self.waiting = 0
        self.peak_running = 0

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one place among the running chains for the duration of a run."""
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
