"""Thread locks that hold, in SQLite and in a real PostgreSQL: a router process that finishes
thread B still holds thread A, which another router process (of two workers) cannot take (a
409 thread_busy naming no file or database); no thread id, not even one forged to the CRC32 of
another, takes another thread's lock; a released lock leaves no file behind."""

from __future__ import annotations

import threading
import zlib

import httpx
import pytest

from glimprouter.graph.thread_locks import ThreadBusy, lock_file, thread_lock
from tests.fakes import chat, fake_model_server
from tests.processes import stop
from tests.routers import start_router

GUARD_S = 120  # an upper bound for a slow machine


@pytest.fixture(params=["sqlite", "postgres"])
def database(request, tmp_path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "chains.sqlite")
    return request.getfixturevalue("postgres_uri")


def ask(question: str, thread: str) -> dict:
    return chat(thread_id=thread, messages=[{"role": "user", "content": question}])


def assert_busy(reply: httpx.Response, database: str) -> None:
    """A 409 thread_busy that tells nothing of where the threads are kept."""
    assert reply.status_code == 409, reply.text
    error = reply.json()["error"]
    assert error["code"] == "thread_busy" and error["param"] == "thread_id"
    hidden = [database, "postgres", "sqlite", ".lock", "/tmp"]
    assert not any(word in reply.text for word in hidden), reply.text


def test_finishing_one_thread_keeps_the_lock_of_another(database, request):
    suffix = request.node.callspec.id
    thread_a, thread_b = f"A-{suffix}", f"B-{suffix}"
    arrived, release = threading.Event(), threading.Event()

    def hold_thread_a(index, body):  # A's first model request waits: A stays mid-run
        if "Question A" in body["messages"][0]["content"]:
            arrived.set()
            release.wait(GUARD_S)

    with fake_model_server(fault=hold_thread_a) as fake:
        first, first_url = start_router(fake.url, database)
        second, second_url = start_router(fake.url, database, 160, "--workers", "2")
        try:
            replies: dict[str, httpx.Response] = {}
            running = threading.Thread(
                target=lambda: replies.update(
                    a=httpx.post(
                        f"{first_url}/chat/completions",
                        json=ask("Question A", thread_a),
                        timeout=GUARD_S,
                    )  # fmt: skip
                )
            )
            running.start()
            assert arrived.wait(GUARD_S), "thread A reached the model server"
            # The first process finishes thread B while it runs A ...
            finished = httpx.post(
                f"{first_url}/chat/completions", json=ask("Question B", thread_b), timeout=GUARD_S
            )
            assert finished.status_code == 200, finished.text
            # ... and still holds A: against itself, and against both workers of the other.
            again = httpx.post(f"{first_url}/chat/completions", json=ask("Question A", thread_a))
            assert_busy(again, database)
            for _ in range(4):  # a fresh connection each: either worker may take it
                other = httpx.post(
                    f"{second_url}/chat/completions",
                    json=ask("Question A", thread_a),
                    headers={"Connection": "close"},
                )
                assert_busy(other, database)
            release.set()
            running.join(GUARD_S)
            assert replies["a"].status_code == 200, replies["a"].text
            asked = len(fake.requests)
            done = httpx.post(f"{second_url}/chat/completions", json=ask("Question A", thread_a))
            assert done.status_code == 200 and len(fake.requests) == asked  # read back
        finally:
            release.set()
            stop(first)
            stop(second)


def forged(victim: str) -> str:
    """A thread id of printable ASCII whose CRC32 is the victim's (CRC32 is linear: four chosen
    bytes give any CRC; the lock keys used to be CRC32)."""
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xEDB88320 if crc & 1 else crc >> 1
        table.append(crc)
    by_top = {entry >> 24: byte for byte, entry in enumerate(table)}
    wanted, indexes = zlib.crc32(victim.encode()) ^ 0xFFFFFFFF, []
    for _ in range(4):  # the table rows that lead back from the victim's register
        indexes.insert(0, by_top[wanted >> 24])
        wanted = ((wanted ^ table[indexes[0]]) << 8) & 0xFFFFFFFF
    for attempt in range(100_000):
        prefix = f"mallory-{attempt}-".encode()
        register, tail = zlib.crc32(prefix) ^ 0xFFFFFFFF, bytearray()
        for index in indexes:
            tail.append((register ^ index) & 0xFF)
            register = (register >> 8) ^ table[index]
        if all(0x30 <= byte < 0x7B for byte in tail):
            forged_id = (prefix + tail).decode()
            assert zlib.crc32(forged_id.encode()) == zlib.crc32(victim.encode())
            return forged_id
    raise AssertionError("no printable forgery found")


async def test_no_thread_id_takes_another_threads_lock(database):
    victim = "victim-thread"
    async with thread_lock(database, forged(victim)):
        async with thread_lock(database, victim):  # the forged CRC32 holds nothing of it
            with pytest.raises(ThreadBusy):  # while a thread's own lock still holds
                async with thread_lock(database, victim):
                    pass


async def test_a_released_lock_leaves_no_file(tmp_path):
    database = tmp_path / "chains.sqlite"
    async with thread_lock(database, "t"):
        assert lock_file(database, "t").exists()
    assert not lock_file(database, "t").exists()
    async with thread_lock(database, "t"):  # taken again, anew
        pass
