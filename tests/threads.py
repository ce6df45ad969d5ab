"""Chains kept in a checkpoint database, as the tests read them back: the `ask` arguments
that keep a thread, and the steps a thread holds."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

from glimprouter.graph.tenants import SINGLE_TENANT
from glimprouter.graph.threads import DURABILITY, open_threads
from tests.paths import REPO
from tests.processes import Lines, running

# Holds a thread of the database argv[1] (the single tenant's thread argv[2]) as a run of it
# does, until its standard input ends.
HOLDER = (
    "import asyncio, sys\nfrom glimprouter.graph.threads import open_threads\n"
    "async def hold():\n    async with open_threads(sys.argv[1]) as store:\n"
    "        async with store.held(sys.argv[3], sys.argv[2]):\n"
    "            print('held', flush=True)\n            sys.stdin.read()\n"
    "asyncio.run(hold())\n"
)


@contextlib.contextmanager
def thread_held(database: str, thread: str) -> Iterator[None]:
    """Another process holding `thread` of `database` (no API keys) while the block runs."""
    command = [sys.executable, "-c", HOLDER, database, thread, SINGLE_TENANT]
    pipes = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "text": True}
    env = os.environ | {"PYTHONPATH": str(REPO)}
    with running(command, env=env, **pipes) as holder:
        Lines(holder.stdout).wait_for(lambda line: line == "held\n", 120, "the holder's 'held'")
        yield
        holder.stdin.close()  # the holder's read ends: it lets go of the thread and exits
        assert holder.wait(timeout=120) == 0


def ask_args(url: str, database: str, thread: str) -> list[str]:
    return ["ask", "What is 2 + 2?", "--thread-id", thread, "--checkpoint-db", database,
            "--small-url", url, "--large-url", url, "--step-max-tokens", "16",
            "--token-budget", "160", "--answer-max-tokens", "16"]  # fmt: skip


def saved_steps(database: str, thread: str, key: str | None = None) -> list[dict]:
    """The steps saved in `thread` of the client with API `key` (None: no keys, or ask)."""

    async def read() -> list[dict]:
        async with open_threads(database) as store:
            digest = hashlib.sha256(key.encode()).digest() if key is not None else None
            checkpoint_id = await store.checkpoint_id(store.tenant(digest), thread)
            state = await store.graph.aget_state({"configurable": {"thread_id": checkpoint_id}})
            return list(state.values.get("steps") or [])

    return asyncio.run(read())


def streamed_events(durable: Any, question: str, context: Any, config: dict) -> AsyncIterator:
    """The custom events of a durable run of `question` on the thread of `config`, as a notebook
    streams them (a caller that walks away mid-way closes the stream)."""
    return durable.astream(
        {"question": question},
        context=context,
        config=config,
        stream_mode="custom",
        durability=DURABILITY,
    )
