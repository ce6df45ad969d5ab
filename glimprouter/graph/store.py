"""The savers of the checkpoint database: LangGraph's own SQLite and PostgreSQL savers, each
keeping at most a few checkpoints per thread and noting when each thread was last touched, in
two tables of GlimpRouter's own that read the same on both databases.

A checkpoint holds a thread's whole state (AsyncSqliteSaver stores all of it in every one, the
PostgreSQL saver every changed channel), while resuming a thread needs only its latest: a long
chain kept every checkpoint would grow with the square of its length.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

from glimprouter.extras import require

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def is_postgres(location: str | Path) -> bool:
    """Whether a checkpoint database is a PostgreSQL URI rather than a SQLite file."""
    return str(location).startswith(POSTGRES_SCHEMES)


# GlimpRouter's tables beside LangGraph's: the secret the tenants' thread ids are hashed with,
# and when each thread was last run or read.
OWN_TABLES = (
    "CREATE TABLE IF NOT EXISTS glimprouter_secrets "
    "(name TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS glimprouter_threads "
    "(thread_id TEXT PRIMARY KEY, touched_at DOUBLE PRECISION NOT NULL)",
)
NEW_SECRET = "INSERT INTO glimprouter_secrets (name, value) VALUES (?, ?) ON CONFLICT DO NOTHING"
SECRET = "SELECT value FROM glimprouter_secrets WHERE name = ?"
TOUCH = (
    "INSERT INTO glimprouter_threads (thread_id, touched_at) VALUES (?, ?) "
    "ON CONFLICT (thread_id) DO UPDATE SET touched_at = excluded.touched_at"
)
TOUCHED = "SELECT thread_id, touched_at FROM glimprouter_threads"
TOUCHED_ONE = "SELECT touched_at FROM glimprouter_threads WHERE thread_id = ?"
FORGET = "DELETE FROM glimprouter_threads WHERE thread_id = ?"
# Threads saved before their touches were noted (by an earlier release, or by a Python caller
# of an older one): dated by their latest checkpoint when first seen.
UNDATED = (
    "SELECT DISTINCT thread_id FROM checkpoints c WHERE NOT EXISTS "
    "(SELECT 1 FROM glimprouter_threads t WHERE t.thread_id = c.thread_id)"
)
COUNT = "SELECT COUNT(*) FROM checkpoints WHERE thread_id = ?"
CROWDED = "SELECT thread_id FROM checkpoints GROUP BY thread_id HAVING COUNT(*) > ?"


class ThreadsSaver:
    """What both savers add to LangGraph's: the cap on a thread's checkpoints (None: keep all),
    the touch of every thread they save, and the queries of our own tables. A mixin placed
    before LangGraph's saver class."""

    max_checkpoints: int | None = None
    clock: Callable[[], float] = staticmethod(time.time)

    async def aput(
        self, config: dict[str, Any], checkpoint: Any, metadata: Any, new_versions: Any
    ) -> dict[str, Any]:
        saved = await super().aput(config, checkpoint, metadata, new_versions)  # type: ignore[misc]
        thread_id = saved["configurable"]["thread_id"]
        await self.touch(thread_id)
        if self.max_checkpoints and await self.checkpoint_count(thread_id) > self.max_checkpoints:
            await self.keep_latest(thread_id)
        return saved

    async def sql(self, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one statement (placeholders `?`) in its own transaction; its rows."""
        raise NotImplementedError

    async def keep_latest(self, thread_id: str) -> None:
        """Delete every checkpoint of the thread but its latest, with what only they need."""
        raise NotImplementedError

    async def create_own_tables(self) -> None:
        for statement in OWN_TABLES:
            await self.sql(statement)

    async def secret(self, name: str) -> bytes:
        """The random secret `name`, made by whichever process asks first: every process and
        machine sharing the database reads the same one."""
        await self.sql(NEW_SECRET, (name, secrets.token_hex(32)))
        return bytes.fromhex((await self.sql(SECRET, (name,)))[0][0])

    async def touch(self, thread_id: str) -> None:
        await self.sql(TOUCH, (thread_id, self.clock()))

    async def touched(self) -> dict[str, float]:
        """When each thread was last run or read (epoch seconds); undated threads are dated by
        their latest checkpoint first."""
        for (thread_id,) in await self.sql(UNDATED):
            latest = await self.aget_tuple({"configurable": {"thread_id": thread_id}})  # type: ignore[attr-defined]
            if latest is not None:
                at = datetime.fromisoformat(latest.checkpoint["ts"]).timestamp()
                await self.sql(TOUCH, (thread_id, at))
        return {thread_id: at for thread_id, at in await self.sql(TOUCHED)}

    async def touched_at(self, thread_id: str) -> float | None:
        rows = await self.sql(TOUCHED_ONE, (thread_id,))
        return rows[0][0] if rows else None

    async def checkpoint_count(self, thread_id: str) -> int:
        return (await self.sql(COUNT, (thread_id,)))[0][0]

    async def crowded(self, most: int) -> list[str]:
        """The threads holding more than `most` checkpoints."""
        return [thread_id for (thread_id,) in await self.sql(CROWDED, (most,))]

    async def forget(self, thread_id: str) -> None:
        """Delete the thread: its checkpoints, their writes, and its touch."""
        await self.adelete_thread(thread_id)  # type: ignore[attr-defined]
        await self.sql(FORGET, (thread_id,))


class SqliteSaver(ThreadsSaver, AsyncSqliteSaver):
    """AsyncSqliteSaver with a cap on each thread's checkpoints."""

    async def sql(self, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        await self.setup()  # LangGraph's tables, which our queries read
        async with self.lock:
            async with self.conn.execute(query, tuple(params)) as cursor:
                rows = await cursor.fetchall()
            await self.conn.commit()
        return [tuple(row) for row in rows]

    async def keep_latest(self, thread_id: str) -> None:
        # checkpoint_id is a UUID6, ordered as time: the saver reads a thread's latest as its
        # greatest, per namespace.
        async with self.lock:
            await self.conn.execute(
                "DELETE FROM checkpoints WHERE thread_id = ? AND checkpoint_id NOT IN "
                "(SELECT MAX(checkpoint_id) FROM checkpoints WHERE thread_id = ? "
                "GROUP BY checkpoint_ns)",
                (thread_id, thread_id),
            )
            await self.conn.execute(
                "DELETE FROM writes WHERE thread_id = ? AND checkpoint_id NOT IN "
                "(SELECT checkpoint_id FROM checkpoints WHERE thread_id = ?)",
                (thread_id, thread_id),
            )
            await self.conn.commit()


def postgres_saver_class() -> type:
    """ThreadsSaver over AsyncPostgresSaver (imported only when a PostgreSQL URI is used: the
    driver is an extra)."""
    AsyncPostgresSaver = require("langgraph.checkpoint.postgres.aio").AsyncPostgresSaver

    class PostgresSaver(ThreadsSaver, AsyncPostgresSaver):
        """AsyncPostgresSaver with a cap on each thread's checkpoints."""

        async def sql(self, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
            async with self.lock:  # the saver's rows are dicts
                cursor = await self.conn.execute(query.replace("?", "%s"), tuple(params))
                rows = await cursor.fetchall() if cursor.description else []
            return [tuple(row.values()) for row in rows]

        async def keep_latest(self, thread_id: str) -> None:
            # LangGraph's own pruning: it also frees the channel blobs no kept checkpoint uses.
            await self.aprune([thread_id], strategy="keep_latest")

    return PostgresSaver
