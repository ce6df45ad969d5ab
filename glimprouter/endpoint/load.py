"""Concurrency: the chains of thought in flight, bounded by --max-concurrency."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


class Load:
    """Chains of thought in flight, bounded when max_concurrency is set (the rest wait)."""

    def __init__(self, max_concurrency: int | None) -> None:
        self._semaphore = asyncio.Semaphore(max_concurrency) if max_concurrency else None
        self.running = 0
        self.waiting = 0
        self.peak_running = 0

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one place among the running chains for the duration of a run."""
        self.waiting += 1
        try:
            if self._semaphore is not None:
                await self._semaphore.acquire()
        finally:
            self.waiting -= 1
        self.running += 1
        self.peak_running = max(self.peak_running, self.running)
        try:
            yield
        finally:
            self.running -= 1
            if self._semaphore is not None:
                self._semaphore.release()
