"""How long threads are kept, in SQLite and in a real PostgreSQL: a thread not touched for the
TTL is deleted while the others (and one being run) remain; serve-router --thread-ttl sweeps
as it starts; `glimprouter threads prune` deletes and trims by hand, printing what it did; and
the checkpoint cap bounds what a long chain stores."""

from __future__ import annotations

import asyncio
import re
import sqlite3
from pathlib import Path

import httpx
import psycopg
import pytest

from glimprouter.cli import main
from glimprouter.graph.invoke import run_question
from glimprouter.graph.retention import parse_duration, prune_threads, shown_duration
from glimprouter.graph.tenants import SINGLE_TENANT
from glimprouter.graph.thread_locks import thread_lock
from glimprouter.graph.threads import DURABILITY, open_threads, thread_config
from tests.fakes import chat, context_at, fake_model_server, tiny_steps
from tests.processes import stop, wait_until
from tests.routers import start_router
from tests.threads import ask_args, saved_steps

HOUR = 3600.0


@pytest.fixture(params=["sqlite", "postgres"])
def database(request, tmp_path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "chains.sqlite")
    return request.getfixturevalue("postgres_uri")


def test_durations_read_as_people_write_them():
    assert [parse_duration(text) for text in ("90", "90s", "30m", "12h", "7d", "1.5h")] == [
        90, 90, 1800, 43200, 604800, 5400
    ]  # fmt: skip
    for bad in ("", "0", "-1h", "7w", "h"):
        with pytest.raises(ValueError, match="duration"):
            parse_duration(bad)
    assert [shown_duration(s) for s in (604800, 43200, 90, 1.5)] == ["7d", "12h", "90s", "1.5s"]


async def run_thread(store, thread: str, url: str, **context) -> str:
    """Run the single tenant's `thread` to its end in `store`; its checkpoint thread id."""
    context = context_at(url, token_budget=160, **context)
    async with store.held(SINGLE_TENANT, thread) as checkpoint_id:
        run_input = {"question": f"What is {thread}?", "task": "math"}
        config = thread_config(context, checkpoint_id)
        await run_question(store.graph, run_input, context, config, durability=DURABILITY)
    return checkpoint_id


async def test_a_thread_past_its_ttl_is_deleted_and_the_others_remain(database, request):
    suffix, now = request.node.callspec.id, [1000.0]  # a clock of our own, far in the past
    with fake_model_server() as fake:
        async with open_threads(database, clock=lambda: now[0]) as store:
            old = await run_thread(store, f"old-{suffix}", fake.url)
            running = await run_thread(store, f"running-{suffix}", fake.url)
            now[0] += 2 * HOUR
            fresh = await run_thread(store, f"fresh-{suffix}", fake.url)
            async with thread_lock(database, running):  # being run by another: left alone
                pruned = await prune_threads(store, older_than=HOUR, now=now[0] + 1)
            assert set(pruned.deleted) == {old} and pruned.busy == [running]
            assert pruned.deleted[old] == 1000.0
            for thread, kept in ((old, False), (running, True), (fresh, True)):
                saved = await store.saver.aget_tuple({"configurable": {"thread_id": thread}})
                assert (saved is not None) == kept, thread


def age(database: str, checkpoint_id: str, touched_at: float = 0.0) -> None:
    """Make a thread look untouched since `touched_at`, as if it had lain there since."""
    query = "UPDATE glimprouter_threads SET touched_at = ? WHERE thread_id = ?"
    if database.startswith("postgresql://"):
        with psycopg.connect(database, autocommit=True) as conn:
            conn.execute(query.replace("?", "%s"), (touched_at, checkpoint_id))
        return
    with sqlite3.connect(database) as conn:
        assert conn.execute(query, (touched_at, checkpoint_id)).rowcount == 1


def checkpoint_id_of(database: str, thread: str) -> str:
    async def derive() -> str:
        async with open_threads(database) as store:
            return await store.checkpoint_id(SINGLE_TENANT, thread)

    return asyncio.run(derive())


def test_serve_router_sweeps_threads_past_thread_ttl(tmp_path: Path):
    database = str(tmp_path / "chains.sqlite")
    with fake_model_server() as fake:
        for thread in ("stale", "kept"):
            assert main(ask_args(fake.url, database, thread)) == 0
        age(database, checkpoint_id_of(database, "stale"))
        router, url = start_router(fake.url, database, 160, "--thread-ttl", "1h")
        try:
            wait_until(lambda: not saved_steps(database, "stale"), 120, "the stale thread swept")
            assert saved_steps(database, "kept")
            asked = len(fake.requests)
            reply = httpx.post(f"{url}/chat/completions", json=chat(thread_id="stale"), timeout=120)
            assert reply.status_code == 200 and len(fake.requests) > asked  # asked anew
        finally:
            assert stop(router) == 0


def test_threads_prune_deletes_and_trims_by_hand(database, request, capsys):
    suffix = request.node.callspec.id
    stale, crowded, kept = (f"{name}-{suffix}" for name in ("stale", "crowded", "kept"))

    async def write() -> dict[str, str]:
        async with open_threads(database, max_checkpoints=None) as store:  # keeps every one
            return {t: await run_thread(store, t, fake.url) for t in (stale, crowded)}

    with fake_model_server() as fake:
        ids = asyncio.run(write())
        assert main(ask_args(fake.url, database, kept)) == 0
        age(database, ids[stale])
        capsys.readouterr()
        assert main(["threads", "prune", "--checkpoint-db", database, "--older-than", "1h"]) == 0
        printed = capsys.readouterr().out
        asked = len(fake.requests)
        resume = ["ask", *ask_args(fake.url, database, crowded)[2:]]  # no question: resume
        assert main(resume) == 0  # trimmed, and still read back
        assert len(fake.requests) == asked
    assert f"deleted thread {ids[stale]} (last touched 1970-01-01 00:00:00 UTC)" in printed
    assert f"trimmed thread {ids[crowded]}: " in printed
    assert re.search(r"^deleted \d+ thread\(s\) not touched for 1h, trimmed ", printed, re.M)
    print(printed)
    assert not saved_steps(database, stale) and saved_steps(database, kept)

    async def counts() -> list[int]:
        async with open_threads(database) as store:
            return [await store.saver.checkpoint_count(ids[t]) for t in (stale, crowded)]

    assert asyncio.run(counts()) == [0, 1]


def stored_bytes(database: str, checkpoint_id: str) -> int:
    """What one thread takes in the database: the SQLite file (after its router closed it), or
    the PostgreSQL rows of the thread."""
    if not database.startswith("postgresql://"):
        return Path(database).stat().st_size
    with psycopg.connect(database) as conn:
        return sum(
            conn.execute(
                f"SELECT COALESCE(SUM(pg_column_size(t.*)), 0) FROM {table} t WHERE thread_id = %s",
                (checkpoint_id,),
            ).fetchone()[0]
            for table in ("checkpoints", "checkpoint_blobs", "checkpoint_writes")
        )


def test_the_checkpoint_cap_bounds_a_long_chains_stored_size(database, request, tmp_path):
    """One 8 KB question, a chain of 32 tiny steps: every checkpoint kept, or the default cap."""
    question = ("Consider the numbers " + " ".join(map(str, range(3000))))[:8000] + " What now?"
    sizes, counts = {}, {}
    with fake_model_server(fault=tiny_steps) as fake:
        for cap in ("0", "4"):
            where = (
                database
                if database.startswith("postgresql://")
                else str(tmp_path / f"cap-{cap}.sqlite")
            )
            thread = f"long-{request.node.callspec.id}-{cap}"
            router, url = start_router(fake.url, where, 4096, "--max-steps", "32",
                                       "--max-thread-checkpoints", cap)  # fmt: skip
            try:
                body = chat(thread_id=thread, messages=[{"role": "user", "content": question}])
                reply = httpx.post(f"{url}/chat/completions", json=body, timeout=300)
                assert reply.status_code == 200, reply.text
                assert reply.json()["usage"]["glimprouter"]["steps"] == 32
            finally:
                assert stop(router) == 0
            checkpoint_id = checkpoint_id_of(where, thread)
            sizes[cap] = stored_bytes(where, checkpoint_id)
            counts[cap] = asyncio.run(count_checkpoints(where, checkpoint_id))
    print(
        f"{request.node.callspec.id}: a 32-step chain of an 8 KB question stores "
        f"{sizes['0'] / 1e6:.2f} MB in {counts['0']} checkpoints with every one kept, "
        f"{sizes['4'] / 1e6:.2f} MB in {counts['4']} with --max-thread-checkpoints 4"
    )
    assert counts["4"] <= 4 < counts["0"]
    assert sizes["4"] * 5 < sizes["0"]


async def count_checkpoints(database: str, checkpoint_id: str) -> int:
    async with open_threads(database) as store:
        return await store.saver.checkpoint_count(checkpoint_id)
