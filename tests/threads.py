"""Chains kept in a checkpoint database, as the tests read them back: the `ask` arguments
that keep a thread, and the steps a thread holds."""

from __future__ import annotations

import asyncio
import hashlib

from glimprouter.graph.threads import open_threads


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
