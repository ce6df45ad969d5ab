"""Running the graph for one request: the run in its own task, its events on a queue, stopped
when the client leaves."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import Any

from starlette.requests import Request

from glimprouter.endpoint.chains import Chains
from glimprouter.endpoint.errors import ChainCut
from glimprouter.endpoint.load import Load
from glimprouter.endpoint.metrics import RouterMetrics
from glimprouter.endpoint.requests import ChatRequest
from glimprouter.graph.state import OutputState


class GraphRun:
    """One chain of thought in its own task; the response reads its events from a queue.

    LangGraph's stream stays in the task that started it (its context variables belong there),
    while the response may wait on it from another task and stop it at any point. Events are the
    graph's own ({"event": "step", ...}, {"event": "answer", ...}), then {"event": "result"}.
    """

    def __init__(
        self, chat: ChatRequest, chains: Chains, load: Load, metrics: RouterMetrics
    ) -> None:
        self._events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._task = asyncio.create_task(self._produce(chat, chains, load, metrics))

    async def _produce(
        self, chat: ChatRequest, chains: Chains, load: Load, metrics: RouterMetrics
    ) -> None:
        try:
            async with load.slot(chat.api_key):
                started = time.perf_counter()
                output = await chains.run(chat, self._events.put_nowait)
                metrics.record_chain(output, time.perf_counter() - started)
        except Exception as error:  # handed to the reader, which answers with an error object
            self._events.put_nowait({"event": "error", "error": error})
            return
        # The end last, once the slot is free: a client that has its answer sees the load it
        # left behind.
        if output.get("error"):  # a model server failed mid-chain, after its retries
            self._events.put_nowait({"event": "error", "error": ChainCut(output)})
        else:
            self._events.put_nowait({"event": "result", "output": output})

    async def next_event(self) -> dict[str, Any]:
        """The next event; an error of the run is raised here."""
        event = await self._events.get()
        if event["event"] == "error":
            raise event["error"]
        return event

    async def output(self) -> OutputState:
        """The run's output, once it has finished."""
        while (event := await self.next_event())["event"] != "result":
            pass
        return event["output"]

    def cancel(self) -> None:
        """Stop the run: its open model requests are closed, which makes vLLM abort them."""
        self._task.cancel()


class ClientGone(Exception):
    """The client disconnected while its run was going."""


async def unless_disconnected(request: Request, work: Awaitable[Any]) -> Any:
    """Await `work` unless the client leaves first: a slow chain of thought must not keep the
    model servers busy for nobody."""
    task = asyncio.ensure_future(work)

    async def disconnected() -> None:
        # The body is read: the only message left is the disconnect (or the response's end).
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(disconnected())
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        task.cancel()  # no-op once done
    if task not in done:
        raise ClientGone
    return task.result()
