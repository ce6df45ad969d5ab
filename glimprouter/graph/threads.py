"""Durable chains: a run saved in SQLite or PostgreSQL after every step, resumable under its
thread id.

A thread holds one question's chain. Killing the process loses at most the step in flight:
running the same thread id again continues from the last finished step, and a finished thread
gives back its result without asking any model again.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import os
import sqlite3
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import aiosqlite
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from langgraph.graph.state import CompiledStateGraph

from glimprouter.errors import ConfigError
from glimprouter.graph.builder import build_graph, run_config
from glimprouter.graph.context import RouterContext
from glimprouter.graph.settings import redact_url
from glimprouter.graph.state import InputState

# Write each checkpoint before the next step starts, so a kill never loses a finished step.
DURABILITY = "sync"


POSTGRES_SCHEMES = ("postgresql://", "postgres://")


class ThreadBusy(ConfigError):
    """Another process (or request) is running the thread."""


def is_postgres(location: str | Path) -> bool:
    """Whether a checkpoint database is a PostgreSQL URI rather than a SQLite file."""
    return str(location).startswith(POSTGRES_SCHEMES)


@asynccontextmanager
async def durable_graph(location: str | Path) -> AsyncIterator[CompiledStateGraph]:
    """The routing graph with its checkpoints in `location`: a SQLite file (created if new, for
    its owner's eyes only: chains hold questions and answers), or a PostgreSQL URI
    (postgresql://user:password@host/db), which router processes on any machine can share."""
    if is_postgres(location):
        async with _postgres_saver(str(location)) as saver:
            yield build_graph(checkpointer=saver)
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
        saver = AsyncSqliteSaver(connection, serde=STRICT_SERDE)
        try:
            yield build_graph(checkpointer=saver)
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
    """LangGraph's own PostgreSQL saver (langgraph-checkpoint-postgres), its tables created on
    first use by one process at a time: router processes starting together on a fresh database
    would otherwise race to create them, and all but one fail."""
    try:
        import psycopg
        from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
    except ImportError:
        raise ConfigError(
            'a PostgreSQL --checkpoint-db needs pip install "glimprouter[postgres]"'
        ) from None
    try:
        async with AsyncPostgresSaver.from_conn_string(uri, serde=STRICT_SERDE) as saver:
            await _take_setup_lock(saver.conn)
            try:
                await saver.setup()
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


@asynccontextmanager
async def thread_lock(location: str | Path, thread_id: str) -> AsyncIterator[None]:
    """Hold thread `thread_id` of the database at `location` while this process runs it: two
    processes resuming one thread would fork its chain. The lock goes when the process ends,
    however it ends: a POSIX lock on a byte of `path`.lock (one per thread, by hash) for SQLite,
    a session advisory lock for PostgreSQL."""
    key = zlib.crc32(thread_id.encode())
    refusal = ThreadBusy(
        f"thread {thread_id!r} of {_shown(location)} is being run by another process: wait for "
        "it to end, or pick another --thread-id"
    )
    if is_postgres(location):
        import psycopg

        async with await psycopg.AsyncConnection.connect(str(location), autocommit=True) as conn:
            row = await (await conn.execute("SELECT pg_try_advisory_lock(%s)", (key,))).fetchone()
            if not row[0]:
                raise refusal
            yield  # the lock ends with the session
        return
    lock_path = Path(location).expanduser().with_name(Path(location).name + ".lock")
    descriptor = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.lockf(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, key)
    except OSError as error:
        os.close(descriptor)
        if error.errno not in (errno.EAGAIN, errno.EACCES):
            raise
        raise refusal from None
    try:
        yield
    finally:
        os.close(descriptor)


def _shown(location: str | Path) -> str:
    return redact_url(str(location)) if is_postgres(location) else str(location)


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
) -> ThreadPlan:
    """Decide how to run `thread_id`; `question` None means resume only.

    Refuses an unknown thread when resuming, and a thread that holds another question.
    """
    snapshot = await graph.aget_state({"configurable": {"thread_id": thread_id}})
    saved = snapshot.values
    if not saved:
        if question is None:
            raise ConfigError(
                f"no chain is saved under thread id {thread_id!r}: start one with "
                f"glimprouter ask QUESTION --thread-id {thread_id}, or check --checkpoint-db"
            )
        return ThreadPlan("new", 0, question, {"question": question, "task": task})
    if question is not None and question != saved["question"]:
        raise ConfigError(
            f"thread id {thread_id!r} holds another question ({_head(saved['question'])}): "
            "leave the question out to resume it, or pick a new --thread-id"
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


def _head(text: str, width: int = 60) -> str:
    return repr(text if len(text) <= width else text[: width - 1] + "…")
