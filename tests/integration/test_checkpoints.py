"""Checkpoint databases: private to their owner, revived by LangGraph's strict msgpack mode, and a
database another process holds is one line, not a traceback."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import stat
from pathlib import Path

from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

from glimprouter.cli import main
from glimprouter.evals.datasets import CodeTest
from glimprouter.graph.tenants import SINGLE_TENANT
from glimprouter.graph.threads import durable_graph, open_threads
from tests.fakes import fake_model_server
from tests.threads import thread_held


def _ask(url: str, db: Path, thread: str = "t") -> list[str]:
    return ["ask", "What is 2 + 2?", "--thread-id", thread, "--checkpoint-db", str(db),
            "--small-url", url, "--large-url", url, "--step-max-tokens", "16",
            "--token-budget", "64", "--answer-max-tokens", "16"]  # fmt: skip


def test_the_database_and_its_journals_are_private_and_read_back(tmp_path: Path, capsys) -> None:
    db = tmp_path / "threads.sqlite"
    old_umask = os.umask(0o022)  # a usual umask: files readable by everyone unless made private
    try:
        with fake_model_server() as server:
            assert main(_ask(server.url, db)) == 0
            asked = len(server.requests)
            assert main(_ask(server.url, db)) == 0  # read back under strict msgpack
            assert len(server.requests) == asked
    finally:
        os.umask(old_umask)
    files = [path for path in tmp_path.iterdir() if path.name.startswith("threads.sqlite")]
    assert db in files
    assert {path.name: stat.S_IMODE(path.stat().st_mode) & 0o077 for path in files} == {
        path.name: 0 for path in files
    }


async def test_checkpoints_revive_no_foreign_class(tmp_path: Path) -> None:
    blob = JsonPlusSerializer().dumps_typed(CodeTest("a", "b", "stdin"))  # a forged checkpoint
    async with durable_graph(tmp_path / "threads.sqlite") as graph:
        revived = graph.checkpointer.serde.loads_typed(blob)
    assert revived == {"input": "a", "output": "b", "testtype": "stdin"}


def test_a_locked_database_is_one_line(tmp_path: Path, capsys) -> None:
    db = tmp_path / "threads.sqlite"
    with fake_model_server() as server:
        assert main(_ask(server.url, db)) == 0
        capsys.readouterr()
        holder = sqlite3.connect(db)
        try:
            holder.execute("BEGIN EXCLUSIVE")  # another process mid-write
            status = main(_ask(server.url, db, thread="u"))
        finally:
            holder.close()
    err = capsys.readouterr().err
    assert status == 2, err
    assert "is locked by another process" in err and "--checkpoint-db" in err
    assert "Traceback" not in err


def test_a_thread_another_process_runs_is_refused(tmp_path: Path, capsys) -> None:
    """Two processes resuming one thread would fork its chain: the second is told, in a line."""
    db = tmp_path / "threads.sqlite"
    with thread_held(str(db), "t"):
        with fake_model_server() as server:
            assert main(_ask(server.url, db)) == 2
            err = capsys.readouterr().err
            assert "thread 't'" in err and "another process" in err and "--thread-id" in err
            assert server.requests == []
            assert main(_ask(server.url, db, thread="other")) == 0  # other threads run
    with fake_model_server() as server:
        assert main(_ask(server.url, db)) == 0  # free once the other process ends


async def _rename_channel(db: Path, thread: str, old: str, new: str) -> None:
    """Rewrite the thread's latest checkpoint as an older GlimpRouter saved it: channel `old`
    under its former name `new`."""
    async with open_threads(db) as store:
        saver = store.graph.checkpointer
        checkpoint_id = await store.checkpoint_id(SINGLE_TENANT, thread)
        saved = await saver.aget_tuple({"configurable": {"thread_id": checkpoint_id}})
        checkpoint = {**saved.checkpoint}
        checkpoint["channel_values"] = {**checkpoint["channel_values"]}
        checkpoint["channel_versions"] = {**checkpoint["channel_versions"]}
        checkpoint["channel_values"][new] = checkpoint["channel_values"].pop(old)
        checkpoint["channel_versions"][new] = checkpoint["channel_versions"].pop(old)
        await saver.aput(saved.parent_config, checkpoint, saved.metadata, {})


def test_a_chain_saved_mid_review_by_the_previous_version_resumes(tmp_path: Path, capsys) -> None:
    db = tmp_path / "threads.sqlite"
    review = ["--method", "specreason", "--max-retries", "0"]
    with fake_model_server(fail_model="large") as failing:  # the large model reviews the draft
        assert main(_ask(failing.url, db) + review) != 0
    asyncio.run(_rename_channel(db, "t", "draft_step", "draft"))  # its name up to 0.1.0
    with fake_model_server() as server:
        assert main(_ask(server.url, db) + review) == 0
        first = server.requests[0]
    assert first["model"] == "large", "the saved draft is reviewed, not drafted again"
    assert "resuming" in capsys.readouterr().out.lower()
