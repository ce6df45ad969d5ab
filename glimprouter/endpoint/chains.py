"""Where a request's chain runs: the graph, or, for a request with a thread id, the durable graph
of --checkpoint-db (SQLite, or PostgreSQL shared by router processes on any machine), saved after
every step and resumed or read back by a later request of the same API key with that id. The
threads not touched for --thread-ttl are swept while the app serves."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from glimprouter.endpoint.errors import RequestError
from glimprouter.endpoint.requests import ChatRequest
from glimprouter.graph.builder import graph, run_config
from glimprouter.graph.invoke import output_of, run_question
from glimprouter.graph.retention import sweep_every
from glimprouter.graph.state import OutputState
from glimprouter.graph.threads import (
    DEFAULT_MAX_THREAD_CHECKPOINTS,
    DURABILITY,
    ThreadStore,
    open_threads,
    plan_thread,
    thread_config,
)


class Chains:
    """The chains of one app; `opened` holds the checkpoint database for the app's life, and
    sweeps it every while when `thread_ttl` (seconds) is set."""

    def __init__(
        self,
        checkpoint_db: str | Path | None = None,
        *,
        thread_ttl: float | None = None,
        max_thread_checkpoints: int | None = DEFAULT_MAX_THREAD_CHECKPOINTS,
    ) -> None:
        self.checkpoint_db = checkpoint_db
        self.thread_ttl = thread_ttl
        self.max_thread_checkpoints = max_thread_checkpoints
        self._store: ThreadStore | None = None

    @contextlib.asynccontextmanager
    async def opened(self) -> AsyncIterator[None]:
        if self.checkpoint_db is None:
            yield
            return
        cap = self.max_thread_checkpoints
        async with open_threads(self.checkpoint_db, max_checkpoints=cap) as store:
            self._store = store
            sweeping = None
            if self.thread_ttl:
                sweeping = asyncio.create_task(sweep_every(store, self.thread_ttl))
            try:
                yield
            finally:
                if sweeping is not None:
                    sweeping.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await sweeping
                self._store = None

    async def run(self, chat: ChatRequest, on_event: Callable[[Any], None]) -> OutputState:
        """The chain of `chat`, its events handed to `on_event` as they come."""
        if chat.thread_id is None:
            config = run_config(chat.context)
            run_input = {"question": chat.question, "task": chat.task}
            return await run_question(graph, run_input, chat.context, config, on_event=on_event)
        store = self._store
        if store is None:
            raise RequestError(
                400,
                "thread_id needs a server that keeps chains: start serve-router with "
                "--checkpoint-db",
                param="thread_id",
            )
        tenant = store.tenant(chat.api_key)
        async with store.held(tenant, chat.thread_id) as checkpoint_id:
            durable = store.graph
            plan = await plan_thread(
                durable, checkpoint_id, chat.question, chat.task, name=chat.thread_id
            )
            config = thread_config(chat.context, checkpoint_id)
            saved = output_of((await durable.aget_state(config)).values)
            # A stream shows the whole chain: the saved steps first, as if written now.
            for step in saved["steps"] or []:
                on_event({"event": "step", **step})
            if plan.state == "finished":
                if saved.get("answer") is not None:
                    on_event({"event": "answer", "model": None, "text": saved["answer"]})
                return saved
            return await run_question(
                durable,
                plan.run_input,
                chat.context,
                config,
                on_event=on_event,
                durability=DURABILITY,
            )
