"""Chains kept across requests (`serve-router --checkpoint-db`, body field `thread_id`), in SQLite
and in a real PostgreSQL the session starts: saved after every step, returned again without
asking a model, and a chain a model server cut resumed through another router app sharing the
database, with its earlier steps unchanged."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading

import httpx
import pytest
from starlette.testclient import TestClient

from glimprouter.endpoint import RouterLimits, create_app
from glimprouter.prompts import STEP_SEPARATOR
from tests.fakes import context_at, fake_model_server
from tests.processes import Lines, start, stop, wait_until
from tests.test_postgres_threads import saved_steps

LIMITS = RouterLimits(max_token_budget=160)


def chat(thread_id: str | None = None, **fields) -> dict:
    body = {"model": "glimprouter", "messages": [{"role": "user", "content": "What is 2 + 2?"}]}
    return body | ({"thread_id": thread_id} if thread_id else {}) | fields


@pytest.fixture(params=["sqlite", "postgres"])
def database(request, tmp_path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "chains.sqlite")
    return request.getfixturevalue("postgres_uri")


def app_at(url: str, database: str | None):
    return TestClient(create_app(context_at(url, token_budget=160), LIMITS, checkpoint_db=database))


def test_a_finished_thread_is_returned_again_without_asking_a_model(database, request):
    thread = f"done-{request.node.name}"
    with fake_model_server() as server, app_at(server.url, database) as client:
        first = client.post("/v1/chat/completions", json=chat(thread)).json()
        asked = len(server.requests)
        again = client.post("/v1/chat/completions", json=chat(thread)).json()
        assert len(server.requests) == asked
        body = chat(thread, stream=True)
        with client.stream("POST", "/v1/chat/completions", json=body) as stream:
            events = [
                json.loads(line[6:]) for line in stream.iter_lines() if line.startswith("data: {")
            ]
        assert len(server.requests) == asked
    assert again["choices"][0]["message"] == first["choices"][0]["message"]
    deltas = [event["choices"][0]["delta"] for event in events if event["choices"]]
    streamed = "".join(delta.get("reasoning_content", "") for delta in deltas)
    assert streamed == first["choices"][0]["message"]["reasoning_content"]
    assert (
        "".join(d.get("content", "") for d in deltas) == first["choices"][0]["message"]["content"]
    )


def test_a_cut_chain_resumes_through_another_router_sharing_the_database(database, request):
    thread = f"cut-{request.node.name}"
    # The model servers fail from their fourth request on: the chain stops after a few steps.
    with fake_model_server(fault=lambda index, _: "500" if index >= 3 else None) as failing:
        with app_at(failing.url, database) as router_a:
            assert router_a.post("/v1/chat/completions", json=chat(thread)).status_code == 502
    before = saved_steps(database, thread)
    assert before, "the steps written before the failure were saved"
    with fake_model_server() as healthy, app_at(healthy.url, database) as router_b:
        reply = router_b.post("/v1/chat/completions", json=chat(thread))
        assert reply.status_code == 200, reply.text
    after = saved_steps(database, thread)
    assert after[: len(before)] == before and len(after) > len(before)
    reasoning = reply.json()["choices"][0]["message"]["reasoning_content"]
    assert reasoning.startswith(before[0]["text"])


def test_thread_ids_are_checked(tmp_path):
    with fake_model_server() as server:
        with app_at(server.url, None) as plain:
            refused = plain.post("/v1/chat/completions", json=chat("t")).json()["error"]
            assert refused["param"] == "thread_id" and "--checkpoint-db" in refused["message"]
        with app_at(server.url, str(tmp_path / "c.sqlite")) as client:
            assert client.post("/v1/chat/completions", json=chat("t")).status_code == 200
            other = chat("t")
            other["messages"][0]["content"] = "Another question"
            refused = client.post("/v1/chat/completions", json=other)
            assert refused.status_code == 400 and "holds another question" in refused.text
            empty = chat() | {"thread_id": ""}
            assert client.post("/v1/chat/completions", json=empty).status_code == 400


def start_router(
    url: str, database: str | None, token_budget: int = 160, *flags: str, **popen
) -> tuple[subprocess.Popen, str]:
    """A serve-router process (with `flags`, and --checkpoint-db `database` if given); its base
    URL once it is ready."""
    command = [sys.executable, "-m", "glimprouter.cli", "serve-router", "--port", "0",
               "--small-url", url, "--large-url", url, "--token-budget", str(token_budget),
               "--step-max-tokens", "16", "--answer-max-tokens", "16", "--max-retries", "0",
               *(["--checkpoint-db", database] if database else []), *flags]  # fmt: skip
    popen = {"stderr": subprocess.DEVNULL, **popen}
    process = start(command, stdout=subprocess.PIPE, text=True, **popen)
    ready = Lines(process.stdout).wait_for(
        lambda line: line if line.startswith("serving ") else None, 120, "the ready line"
    )
    return process, ready.split()[3]


def test_a_router_killed_mid_chain_is_resumed_by_another_process(postgres_uri):
    with fake_model_server(delay_s=0.2) as server:
        kill_a_router_mid_chain_and_resume(server.url, postgres_uri, "killed-router", 160)


def kill_a_router_mid_chain_and_resume(
    url: str, database: str, thread: str, token_budget: int
) -> None:
    """Router A starts the thread and is killed with SIGKILL once two steps are saved; router B,
    sharing the database, finishes it: the final chain keeps A's steps."""
    body = chat(thread, max_tokens=token_budget)
    router_a, url_a = start_router(url, database, token_budget)
    try:

        def send() -> None:
            with contextlib.suppress(httpx.HTTPError):  # its router is killed mid-chain
                httpx.post(f"{url_a}/chat/completions", json=body, timeout=600)

        threading.Thread(target=send, daemon=True).start()
        wait_until(lambda: len(saved_steps(database, thread)) >= 2, 600, "two saved steps")
        router_a.kill()
        router_a.wait()
    finally:
        stop(router_a)
    before = saved_steps(database, thread)
    router_b, url_b = start_router(url, database, token_budget)
    try:
        reply = httpx.post(f"{url_b}/chat/completions", json=body, timeout=600)
    finally:
        assert stop(router_b) == 0
    assert reply.status_code == 200, reply.text
    after = saved_steps(database, thread)
    assert len(before) >= 2 and after[: len(before)] == before
    reasoning = reply.json()["choices"][0]["message"]["reasoning_content"]
    assert reasoning.startswith(STEP_SEPARATOR.join(step["text"] for step in before))
