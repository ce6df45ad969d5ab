"""Durable chains in PostgreSQL (`--checkpoint-db postgresql://...`), against a real server the
session starts: saved after every step, read back without asking a model again, resumed by
another process after a SIGKILL with its earlier steps unchanged, one process per thread."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import psycopg

from glimprouter.cli import main
from glimprouter.graph.tenants import SINGLE_TENANT
from glimprouter.graph.thread_locks import advisory_key
from glimprouter.graph.threads import durable_graph, open_threads
from tests.fakes import fake_model_server
from tests.processes import running, wait_until
from tests.threads import ask_args, saved_steps


def test_a_chain_saved_in_postgres_is_read_back_without_asking_again(postgres_uri, capsys):
    with fake_model_server() as server:
        assert main(ask_args(server.url, postgres_uri, "read-back")) == 0
        asked = len(server.requests)
        assert main(ask_args(server.url, postgres_uri, "read-back")) == 0
        assert len(server.requests) == asked
    assert "is finished; its saved result" in capsys.readouterr().out
    assert saved_steps(postgres_uri, "read-back")


def test_a_chain_killed_mid_way_resumes_in_another_process(postgres_uri):
    thread = "killed"
    with fake_model_server(delay_s=0.3) as slow:
        with running(
            [sys.executable, "-m", "glimprouter.cli", *ask_args(slow.url, postgres_uri, thread)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ) as first:
            before = wait_until(
                lambda: (steps := saved_steps(postgres_uri, thread)) and len(steps) >= 2 and steps,
                300,
                "two saved steps",
            )
            first.kill()
            first.wait()
    before = saved_steps(postgres_uri, thread)  # what the killed process had saved last
    with fake_model_server() as server:
        assert main(ask_args(server.url, postgres_uri, thread)) == 0
    after = saved_steps(postgres_uri, thread)
    assert len(after) > len(before) >= 2
    assert after[: len(before)] == before, "the resumed chain rewrote earlier steps"


def checkpoint_id_of(database: str, thread: str) -> str:
    """The checkpoint thread id `glimprouter ask --thread-id thread` saves under."""

    async def read() -> str:
        async with open_threads(database) as store:
            return await store.checkpoint_id(SINGLE_TENANT, thread)

    return asyncio.run(read())


def test_a_thread_another_process_runs_is_refused(postgres_uri, capsys):
    key = advisory_key(checkpoint_id_of(postgres_uri, "held"))
    with psycopg.connect(postgres_uri, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (key,))
        with fake_model_server() as server:
            assert main(ask_args(server.url, postgres_uri, "held")) == 2
            assert server.requests == []
    err = capsys.readouterr().err
    assert "being run by another process" in err and len(err.strip().splitlines()) == 1


def test_an_unreachable_database_is_one_line_with_no_password(capsys):
    database = "postgresql://router:s3cret@127.0.0.1:1/chains"
    with fake_model_server() as server:
        assert main(ask_args(server.url, database, "t")) == 2
    err = capsys.readouterr().err
    assert "cannot use the PostgreSQL checkpoint database" in err and "--checkpoint-db" in err
    assert "s3cret" not in err and len(err.strip().splitlines()) == 1


def test_processes_opening_a_fresh_database_together_all_get_it(postgres_uri):
    """Router workers start together: one creates LangGraph's tables, the others wait for it
    (unguarded, all but one failed with a unique violation, and a waiting lock deadlocked with
    the migrations' CREATE INDEX CONCURRENTLY)."""
    fresh = postgres_uri.replace("/postgres?", "/opened_together?")
    assert fresh != postgres_uri

    async def open_together() -> list[BaseException | None]:
        async with await psycopg.AsyncConnection.connect(postgres_uri, autocommit=True) as conn:
            await conn.execute("CREATE DATABASE opened_together")

        async def open_one() -> None:
            async with durable_graph(fresh):
                pass

        return await asyncio.gather(*(open_one() for _ in range(4)), return_exceptions=True)

    assert asyncio.run(open_together()) == [None] * 4
