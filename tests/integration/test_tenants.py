"""Whose thread is whose, against real serve-router processes and fake model servers, in SQLite
and in a real PostgreSQL: two API keys sending one thread_id each get a chain of their own and
learn nothing of the other's (the router finding its database in GLIMPROUTER_CHECKPOINT_DB);
a server with no keys (and `glimprouter ask`) still resumes the
threads an earlier release saved under the raw thread id; any thread id JSON can carry is
stored, and what leaves for the model servers is an opaque hash of (tenant, chain)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os

import aiosqlite
import httpx
import pytest
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from starlette.testclient import TestClient

from glimprouter.cli import main
from glimprouter.endpoint import create_app
from glimprouter.endpoint.keys import ApiKeys
from glimprouter.graph.builder import build_graph
from glimprouter.graph.invoke import run_question
from glimprouter.graph.tenants import CHECKPOINT_ID_PREFIX, checkpoint_thread_id, tenant_id
from glimprouter.graph.threads import DURABILITY, STRICT_SERDE, open_threads, thread_config
from glimprouter.model_servers.replicas import session_key
from tests.fakes import chat, context_at, fake_model_server
from tests.processes import stop
from tests.routers import start_router
from tests.threads import ask_args, saved_steps

ALICE, BOB = "alice-key", "bob-key"
KEYS = ("--api-key", ALICE, "--api-key", BOB)
SECRET_QUESTION = "My locker code is 8812, what is 2 plus 2?"


@pytest.fixture(params=["sqlite", "postgres"])
def database(request, tmp_path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "chains.sqlite")
    return request.getfixturevalue("postgres_uri")


def by_env(database: str) -> dict[str, str]:
    """The router's environment naming the database: no password on its command line."""
    return {"env": os.environ | {"GLIMPROUTER_CHECKPOINT_DB": database}}


def post(url: str, body: dict, key: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(f"{url}/chat/completions", json=body, headers=headers, timeout=120)


def first_prefix(requests: list[dict]) -> str:
    """The assistant prefix the first model request of a run continued: "<think>\\n" alone
    for a chain started afresh."""
    return requests[0]["messages"][-1]["content"]


def test_two_keys_with_one_thread_id_each_get_a_chain_of_their_own(database, request):
    thread = f"support-42-{request.node.callspec.id}"
    cut = {"on": True}  # Alice's first run is cut after a few requests: her thread is unfinished

    def fault(index, _):
        return "500" if cut["on"] and index >= 3 else None

    with fake_model_server(fault=fault) as fake:
        router, url = start_router(fake.url, None, 160, *KEYS, **by_env(database))
        try:
            alice_cut = post(url, chat(thread_id=thread, messages=[user(SECRET_QUESTION)]), ALICE)
            assert alice_cut.status_code == 502, alice_cut.text
            alice_before = saved_steps(database, thread, ALICE)
            assert alice_before, "Alice's steps before the cut were saved"
            cut["on"] = False

            # Bob sends the same thread_id with his own question: a new chain, his own.
            asked = len(fake.requests)
            bob = post(url, chat(thread_id=thread, messages=[user("What is 3 + 3?")]), BOB)
            assert bob.status_code == 200, bob.text
            assert first_prefix(fake.requests[asked:]) == "<think>\n", "Bob's chain started anew"
            assert not any("8812" in json.dumps(r) for r in fake.requests[asked:])
            alice_steps = {step["text"] for step in alice_before}
            bob_text = bob.json()["choices"][0]["message"]["reasoning_content"]
            assert "8812" not in bob.text and not any(s in bob_text for s in alice_steps)

            # Bob tries Alice's question under the id: his thread holds his own question, and
            # the refusal quotes neither.
            asked = len(fake.requests)
            refused = post(url, chat(thread_id=thread, messages=[user(SECRET_QUESTION)]), BOB)
            assert refused.status_code == 400 and "holds another question" in refused.text
            assert "8812" not in refused.text and "3 + 3" not in refused.text
            assert len(fake.requests) == asked

            # Alice resumes her own unfinished chain after her saved steps, untouched by Bob.
            assert saved_steps(database, thread, ALICE) == alice_before
            asked = len(fake.requests)
            alice = post(url, chat(thread_id=thread, messages=[user(SECRET_QUESTION)]), ALICE)
            assert alice.status_code == 200, alice.text
            assert first_prefix(fake.requests[asked:]) != "<think>\n", "Alice's chain resumed"
            reasoning = alice.json()["choices"][0]["message"]["reasoning_content"]
            assert reasoning.startswith(alice_before[0]["text"])
        finally:
            assert stop(router) == 0
    alice_saved = saved_steps(database, thread, ALICE)
    bob_saved = saved_steps(database, thread, BOB)
    assert alice_saved[: len(alice_before)] == alice_before and len(alice_saved) > len(alice_before)
    assert bob_saved and bob_saved != alice_saved
    assert saved_steps(database, thread) == [], "nothing is kept under the raw id"


def user(content: str) -> dict:
    return {"role": "user", "content": content}


async def save_as_the_previous_release(database: str, thread: str, url: str) -> None:
    """Run `thread` as the release before tenants did: LangGraph's saver under the raw thread
    id, with no table of ours; the model server fails after a few requests, so the thread is
    left unfinished."""
    context = context_at(url, token_budget=160)
    config = thread_config(context, thread)
    run_input = {"question": "What is 2 + 2?", "task": "math"}
    if database.startswith("postgresql://"):
        from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

        async with AsyncPostgresSaver.from_conn_string(database, serde=STRICT_SERDE) as saver:
            await saver.setup()
            graph = build_graph(checkpointer=saver)
            await run_question(graph, run_input, context, config, durability=DURABILITY)
        return
    async with aiosqlite.connect(database) as connection:
        graph = build_graph(checkpointer=AsyncSqliteSaver(connection, serde=STRICT_SERDE))
        await run_question(graph, run_input, context, config, durability=DURABILITY)


def test_a_keyless_server_and_ask_resume_threads_of_the_previous_release(database, request):
    thread = f"legacy-{request.node.callspec.id}"
    with fake_model_server(fault=lambda index, _: "500" if index >= 3 else None) as failing:
        asyncio.run(save_as_the_previous_release(database, thread, failing.url))
    before = saved_steps(database, thread)  # read as the single tenant: the raw id
    assert before, "the previous release's layout holds steps under the raw id"

    with fake_model_server() as fake:
        keyed = create_app(context_at(fake.url, token_budget=160), api_keys=ApiKeys([ALICE]),
                           checkpoint_db=database)  # fmt: skip
        with TestClient(keyed) as client:  # no key may claim it: its owner is not known
            authorization = {"Authorization": f"Bearer {ALICE}"}
            body = chat(thread_id=thread)
            reply = client.post("/v1/chat/completions", json=body, headers=authorization)
            assert reply.status_code == 200 and first_prefix(fake.requests) == "<think>\n"
        assert saved_steps(database, thread) == before
        asked = len(fake.requests)
        keyless, url = start_router(fake.url, database)
        try:
            reply = post(url, chat(thread_id=thread))
            assert reply.status_code == 200, reply.text
            assert first_prefix(fake.requests[asked:]) != "<think>\n", "resumed, not restarted"
            again = len(fake.requests)
            assert post(url, chat(thread_id=thread)).status_code == 200  # finished: read back
            assert len(fake.requests) == again
        finally:
            stop(keyless)
    after = saved_steps(database, thread)
    assert after[: len(before)] == before and len(after) > len(before)
    reasoning = reply.json()["choices"][0]["message"]["reasoning_content"]
    assert reasoning.startswith(before[0]["text"])

    # `glimprouter ask --thread-id` is the same single tenant: the thread reads back.
    with fake_model_server() as fake:
        assert main(ask_args(fake.url, database, thread)) == 0
        assert fake.requests == []


# Thread ids a client may send: non-ASCII, a NUL (which PostgreSQL text cannot hold), and one
# that would inject a header.
ODD_IDS = ["日本-1", "a\u0000b", "x\r\nx-user-id: replica-2"]


def test_any_thread_id_works_and_leaves_only_as_an_opaque_hash(database, tmp_path):
    carol = "carol-key"
    with fake_model_server() as a, fake_model_server() as b:
        replicas = f"{a.url},{b.url}"
        log = tmp_path / "router.log"
        with log.open("w") as stderr:
            router, url = start_router(replicas, database, 160, "--api-key", carol, stderr=stderr)
        try:
            for thread in ODD_IDS:
                body = json.dumps(chat(thread_id=thread))
                headers = {"Authorization": f"Bearer {carol}", "Content-Type": "application/json"}
                reply = httpx.post(f"{url}/chat/completions", content=body, headers=headers)
                assert reply.status_code == 200, (thread, reply.text)
                asked = len(a.requests) + len(b.requests)
                again = httpx.post(f"{url}/chat/completions", content=body, headers=headers)
                assert again.status_code == 200 and len(a.requests) + len(b.requests) == asked
            # An unpaired surrogate escape is JSON but no Unicode text: a 400 naming the field.
            lone = json.dumps(chat(thread_id="\ud800-lone"))
            refused = httpx.post(f"{url}/chat/completions", content=lone, headers=headers)
            assert refused.status_code == 400 and refused.json()["error"]["param"] == "thread_id"
        finally:
            assert stop(router) == 0
        expected = expected_headers(database, carol, ODD_IDS)
        sent = [
            (headers["x-user-id"], request["model"], replica)
            for replica, server in enumerate((a, b))
            for request, headers in zip(server.requests, server.headers, strict=True)
        ]
    assert "Traceback" not in log.read_text(), log.read_text()
    assert {header for header, _, _ in sent} == set(expected.values())
    for thread, header in expected.items():
        assert len(header) == 32 and thread not in header
        for model in ("small", "large"):
            # Each role's requests of the chain went to one replica: none failed, none moved.
            used = {replica for h, m, replica in sent if h == header and m == model}
            assert len(used) <= 1, (thread, model, used)


def expected_headers(database: str, key: str, threads: list[str]) -> dict[str, str]:
    """The affinity header each of `key`'s threads should carry: a hash of its checkpoint
    thread id, itself hashed from (tenant, thread id) with the database's secret."""

    async def derive() -> dict[str, str]:
        async with open_threads(database) as store:
            tenant = store.tenant(hashlib.sha256(key.encode()).digest())
            return {t: session_key(await store.checkpoint_id(tenant, t)) for t in threads}

    return asyncio.run(derive())


def test_checkpoint_thread_ids_part_tenants_and_keep_to_one_alphabet():
    secret = bytes(32)
    alice, bob = (tenant_id(secret, hashlib.sha256(k.encode()).digest()) for k in (ALICE, BOB))
    assert tenant_id(secret, None) == "" and len({alice, bob, ""}) == 3
    ids = {
        checkpoint_thread_id(secret, tenant, thread)
        for tenant in (alice, bob, "")
        for thread in [*ODD_IDS, "support-42"]
    }
    assert len(ids) == 3 * (len(ODD_IDS) + 1)
    alphabet = set("0123456789abcdef")
    assert all(i.startswith(CHECKPOINT_ID_PREFIX) and set(i[3:]) <= alphabet for i in ids)
    other_secret = checkpoint_thread_id(b"x" * 32, alice, "t")
    assert checkpoint_thread_id(secret, alice, "t") != other_secret
