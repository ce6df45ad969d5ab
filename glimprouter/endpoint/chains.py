"""Where a request's chain runs: the graph, or, for a request with a thread id, the durable graph
of --checkpoint-db (SQLite, or PostgreSQL shared by router processes on any machine), saved after
every step and resumed or read back by a later request with that id."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from langgraph.graph.state import CompiledStateGraph

from glimprouter.endpoint.errors import RequestError
from glimprouter.endpoint.requests import ChatRequest
from glimprouter.graph.builder import graph, run_config
from glimprouter.graph.invoke import output_of, run_question
from glimprouter.graph.state import OutputState
from glimprouter.graph.threads import (
    DURABILITY,
    ThreadBusy,
    durable_graph,
    plan_thread,
    thread_config,
    thread_lock,
)


class Chains:
    """The chains of one app; `opened` holds the checkpoint database for the app's life."""

    def __init__(self, checkpoint_db: str | Path | None = None) -> None:
        self.checkpoint_db = checkpoint_db
        self._durable: CompiledStateGraph | None = None
        self._running: set[str] = set()  # thread ids run by this process (its locks are its own)

    @contextlib.asynccontextmanager
    async def opened(self) -> AsyncIterator[None]:
        if self.checkpoint_db is None:
            yield
            return
        async with durable_graph(self.checkpoint_db) as durable:
            self._durable = durable
            try:
                yield
            finally:
                self._durable = None

    async def run(self, chat: ChatRequest, on_event: Callable[[Any], None]) -> OutputState:
        """The chain of `chat`, its events handed to `on_event` as they come."""
        if chat.thread_id is None:
            config = run_config(chat.context)
            run_input = {"question": chat.question, "task": chat.task}
            return await run_question(graph, run_input, chat.context, config, on_event=on_event)
        if self._durable is None:
            raise RequestError(
                400,
                "thread_id needs a server that keeps chains: start serve-router with "
                "--checkpoint-db",
                param="thread_id",
            )
        thread_id = chat.thread_id
        if thread_id in self._running:
            raise ThreadBusy(f"thread {thread_id!r} is being run by another request: wait for it")
        self._running.add(thread_id)
        try:
            async with thread_lock(self.checkpoint_db, thread_id):
                plan = await plan_thread(self._durable, thread_id, chat.question, chat.task)
                config = thread_config(chat.context, thread_id)
                saved = output_of((await self._durable.aget_state(config)).values)
                # A stream shows the whole chain: the saved steps first, as if written now.
                for step in saved["steps"] or []:
                    on_event({"event": "step", **step})
                if plan.state == "finished":
                    if saved.get("answer") is not None:
                        on_event({"event": "answer", "model": None, "text": saved["answer"]})
                    return saved
                return await run_question(
                    self._durable,
                    plan.run_input,
                    chat.context,
                    config,
                    on_event=on_event,
                    durability=DURABILITY,
                )
        finally:
            self._running.discard(thread_id)
