"""Durable chains: a run saved in SQLite or PostgreSQL after every step, resumable under its
thread id.

A thread holds one question's chain. Killing the process loses at most the step in flight:
running the same thread id again continues from the last finished step, and a finished thread
gives back its result without asking any model again.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
import zlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import aiosqlite
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.graph.state import CompiledStateGraph

from glimprouter.errors import ConfigError
from glimprouter.extras import require
from glimprouter.graph.builder import build_graph, run_config
from glimprouter.graph.context import RouterContext
from glimprouter.graph.settings import redact_url
from glimprouter.graph.state import InputState
from glimprouter.graph.store import (
    SqliteSaver,
    ThreadsSaver,
    is_postgres,
    postgres_saver_class,
)
from glimprouter.graph.tenants import (
    SECRET_NAME,
    SINGLE_TENANT,
    checkpoint_thread_id,
    may_be_legacy,
    tenant_id,
)
from glimprouter.graph.thread_locks import thread_lock

# Write each checkpoint before the next step starts, so a kill never loses a finished step.
DURABILITY = "sync"
CHECKPOINT_DB_ENV = "GLIMPROUTER_CHECKPOINT_DB"
# Checkpoints a thread keeps by default: resuming needs only its latest.
DEFAULT_MAX_THREAD_CHECKPOINTS = 4


def checkpoint_db_from_env() -> str | Path | None:
    """GLIMPROUTER_CHECKPOINT_DB, if set: a PostgreSQL URI, or a SQLite file."""
    if env := os.environ.get(CHECKPOINT_DB_ENV):
        return env if is_postgres(env) else Path(env)
    return None


@dataclass
class ThreadStore:
    """A checkpoint database open: the durable graph, and the tenants' threads in it."""

    location: str | Path
    graph: CompiledStateGraph
    secret: bytes = field(repr=False)

    @property
    def saver(self) -> ThreadsSaver:
        return self.graph.checkpointer  # type: ignore[return-value]

    def tenant(self, key_digest: bytes | None) -> str:
        """The tenant of the API key with this SHA-256 digest (None: no keys, one tenant)."""
        return tenant_id(self.secret, key_digest)

    async def checkpoint_id(self, tenant: str, thread_id: str) -> str:
        """The id `tenant`'s thread `thread_id` is saved under: hashed from both, or, for the
        single tenant, the thread id itself when an earlier release saved the thread so."""
        hashed = checkpoint_thread_id(self.secret, tenant, thread_id)
        if tenant != SINGLE_TENANT or not may_be_legacy(thread_id, is_postgres(self.location)):
            return hashed
        if await self._saved(hashed) or not await self._saved(thread_id):
            return hashed
        return thread_id

    async def _saved(self, checkpoint_id: str) -> bool:
        config = {"configurable": {"thread_id": checkpoint_id, "checkpoint_ns": ""}}
        return await self.saver.aget_tuple(config) is not None

    @asynccontextmanager
    async def held(self, tenant: str, thread_id: str) -> AsyncIterator[str]:
        """`tenant`'s thread `thread_id` locked for this run (or ThreadBusy), and touched: its
        checkpoint thread id."""
        checkpoint_id = await self.checkpoint_id(tenant, thread_id)
        async with thread_lock(self.location, checkpoint_id, name=thread_id):
            await self.saver.touch(checkpoint_id)
            yield checkpoint_id


@asynccontextmanager
async def open_threads(
    location: str | Path,
    *,
    max_checkpoints: int | None = DEFAULT_MAX_THREAD_CHECKPOINTS,
    clock: Callable[[], float] = time.time,
) -> AsyncIterator[ThreadStore]:
    """The checkpoint database at `location` (see `durable_graph`) with its tenants' threads;
    each thread keeps at most `max_checkpoints` checkpoints (None: all), and `clock` dates its
    touches."""
    async with _saver(location) as saver:
        saver.max_checkpoints, saver.clock = max_checkpoints, clock
        secret = await saver.secret(SECRET_NAME)
        yield ThreadStore(location, build_graph(checkpointer=saver), secret)


@asynccontextmanager
async def durable_graph(
    location: str | Path, *, max_checkpoints: int | None = DEFAULT_MAX_THREAD_CHECKPOINTS
) -> AsyncIterator[CompiledStateGraph]:
    """The routing graph with its checkpoints in `location`: a SQLite file (created if new, for
    its owner's eyes only: chains hold questions and answers), or a PostgreSQL URI
    (postgresql://user:password@host/db), which router processes on any machine can share. A
    thread keeps its `max_checkpoints` latest checkpoints (None: every one; resuming needs only
    the latest)."""
    async with open_threads(location, max_checkpoints=max_checkpoints) as store:
        yield store.graph


@asynccontextmanager
async def _saver(location: str | Path) -> AsyncIterator[ThreadsSaver]:
    if is_postgres(location):
        async with _postgres_saver(str(location)) as saver:
            yield saver
        return
    path = Path(location).expanduser()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # SQLite gives its journal and WAL files the database file's mode.
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    except OSError as error:
        raise ConfigError(
            f"cannot create the checkpoint database {path}: {error.strerror}; "
            "set --checkpoint-db / GLIMPROUTER_CHECKPOINT_DB to a writable path"
        ) from None
    async with aiosqlite.connect(str(path)) as connection:
        saver = SqliteSaver(connection, serde=STRICT_SERDE)
        try:
            await saver.create_own_tables()
            yield saver
        except sqlite3.OperationalError as error:
            if "locked" not in str(error):
                raise
            raise ConfigError(
                f"the checkpoint database {path} is locked by another process (another run of "
                "a thread saved there?): wait for it to end, or set --checkpoint-db / "
                "GLIMPROUTER_CHECKPOINT_DB to another file"
            ) from None


@asynccontextmanager
async def _postgres_saver(uri: str) -> AsyncIterator[Any]:
    """LangGraph's own PostgreSQL saver (langgraph-checkpoint-postgres), its tables (and ours)
    created on first use by one process at a time: router processes starting together on a
    fresh database would otherwise race to create them, and all but one fail."""
    psycopg = require("psycopg")
    saver_class = postgres_saver_class()
    try:
        async with saver_class.from_conn_string(uri, serde=STRICT_SERDE) as saver:
            await _take_setup_lock(saver.conn)
            try:
                await saver.setup()
                await saver.create_own_tables()
            finally:
                await saver.conn.execute("SELECT pg_advisory_unlock(%s, 0)", (SETUP_LOCK,))
            yield saver
    except psycopg.OperationalError as error:
        raise ConfigError(
            f"cannot use the PostgreSQL checkpoint database {redact_url(uri)}: "
            f"{str(error).strip().splitlines()[0]}; check --checkpoint-db / "
            "GLIMPROUTER_CHECKPOINT_DB"
        ) from None


async def _take_setup_lock(conn: Any) -> None:
    """Wait for the lock on creating the tables. Polled, because a waiting pg_advisory_lock is a
    running statement, which the holder's CREATE INDEX CONCURRENTLY waits for: a deadlock."""
    # The two-key form: a key space apart from the one-key thread locks.
    query = "SELECT pg_try_advisory_lock(%s, 0) AS taken"  # the saver's rows are dicts
    while not (await (await conn.execute(query, (SETUP_LOCK,))).fetchone())["taken"]:
        await asyncio.sleep(0.05)


SETUP_LOCK = zlib.crc32(b"glimprouter checkpoint tables") >> 1  # fits PostgreSQL's int4

# LangGraph's strict msgpack mode: a checkpoint revives only the types LangGraph itself allows,
# never a class some other module (or a forged database) names; our state is plain data.
STRICT_SERDE = JsonPlusSerializer(allowed_msgpack_modules=None)


def thread_config(context: RouterContext, thread_id: str) -> dict[str, Any]:
    """The run config of one durable thread."""
    return run_config(context, configurable={"thread_id": thread_id})


ThreadState = Literal["new", "unfinished", "finished"]


@dataclass(frozen=True)
class ThreadPlan:
    """What running a thread will do: start it, resume it, or read back its result."""

    state: ThreadState
    steps_done: int
    question: str
    run_input: InputState | None
    """The graph input: the question for a new thread, None to continue a saved one."""


async def plan_thread(
    graph: CompiledStateGraph,
    thread_id: str,
    question: str | None,
    task: str,
    *,
    name: str | None = None,
) -> ThreadPlan:
    """Decide how to run `thread_id` (the checkpoint thread id; `name`, by default that id, is
    the one its caller knows it by); `question` None means resume only.

    Refuses an unknown thread when resuming, and a thread that holds another question, without
    telling what it holds.
    """
    name = name or thread_id
    snapshot = await graph.aget_state({"configurable": {"thread_id": thread_id}})
    saved = snapshot.values
    if not saved:
        if question is None:
            raise ConfigError(
                f"no chain is saved under thread id {name!r}: start one with "
                f"glimprouter ask QUESTION --thread-id {name}, or check --checkpoint-db"
            )
        return ThreadPlan("new", 0, question, {"question": question, "task": task})
    if question is not None and question != saved["question"]:
        raise ConfigError(
            f"thread id {name!r} holds another question: ask it with the question it was "
            "started with (glimprouter ask: leave the question out), or pick another thread id"
        )
    # A run stopped mid-step (cancelled, or its node failed) leaves that step as a task with an
    # error and nothing next: it is unfinished too, and running the thread again retries it.
    state: ThreadState = "unfinished" if snapshot.next or snapshot.tasks else "finished"
    if state == "unfinished":
        await _carry_renamed_channels(graph, snapshot.config)
    return ThreadPlan(state, len(saved.get("steps") or []), saved["question"], None)


# State keys renamed since a chain could be saved: former name -> name. LangGraph restores only the
# channels the graph declares, so a chain paused between the node that set one and the node that
# reads it would resume without it.
RENAMED_CHANNELS = {"draft": "draft_step"}  # renamed after 0.1.0


async def _carry_renamed_channels(graph: CompiledStateGraph, config: dict[str, Any]) -> None:
    """Move the values a previous version saved under a former name to the current one, as an
    update by the node that wrote them (LangGraph's default), so the chain goes on from there."""
    saved = await graph.checkpointer.aget_tuple(config)
    values = saved.checkpoint["channel_values"] if saved else {}
    carried = {
        name: values[former]
        for former, name in RENAMED_CHANNELS.items()
        if former in values and name not in values
    }
    if carried:
        await graph.aupdate_state(config, carried)
