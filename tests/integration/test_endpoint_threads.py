"""Chains kept across requests (`serve-router --checkpoint-db`, body field `thread_id`), in SQLite
and in a real PostgreSQL the session starts: saved after every step, returned again without
asking a model, and a chain a model server cut resumed through another router app sharing the
database, with its earlier steps unchanged."""

from __future__ import annotations

import json

import pytest
from starlette.testclient import TestClient

from glimprouter.endpoint import RouterLimits, create_app
from tests.fakes import chat, context_at, fake_model_server
from tests.routers import kill_a_router_mid_chain_and_resume
from tests.threads import saved_steps, thread_held

LIMITS = RouterLimits(max_token_budget=160)


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
        first = client.post("/v1/chat/completions", json=chat(thread_id=thread)).json()
        asked = len(server.requests)
        again = client.post("/v1/chat/completions", json=chat(thread_id=thread)).json()
        assert len(server.requests) == asked
        body = chat(thread_id=thread, stream=True)
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
            cut = router_a.post("/v1/chat/completions", json=chat(thread_id=thread))
            assert cut.status_code == 502
    before = saved_steps(database, thread)
    assert before, "the steps written before the failure were saved"
    with fake_model_server() as healthy, app_at(healthy.url, database) as router_b:
        reply = router_b.post("/v1/chat/completions", json=chat(thread_id=thread))
        assert reply.status_code == 200, reply.text
    after = saved_steps(database, thread)
    assert after[: len(before)] == before and len(after) > len(before)
    reasoning = reply.json()["choices"][0]["message"]["reasoning_content"]
    assert reasoning.startswith(before[0]["text"])


def test_a_thread_another_process_runs_gets_a_409_thread_busy(database, request):
    thread = f"busy-{request.node.name}"
    with fake_model_server() as server, app_at(server.url, database) as client:
        with thread_held(database, thread):
            busy = client.post("/v1/chat/completions", json=chat(thread_id=thread))
            assert server.requests == []
        assert busy.status_code == 409, busy.text
        error = busy.json()["error"]
        assert (error["code"], error["param"]) == ("thread_busy", "thread_id")
        assert client.post("/v1/chat/completions", json=chat(thread_id=thread)).status_code == 200


def test_thread_ids_are_checked(tmp_path):
    with fake_model_server() as server:
        with app_at(server.url, None) as plain:
            refused = plain.post("/v1/chat/completions", json=chat(thread_id="t")).json()["error"]
            assert refused["param"] == "thread_id" and "--checkpoint-db" in refused["message"]
        with app_at(server.url, str(tmp_path / "c.sqlite")) as client:
            assert client.post("/v1/chat/completions", json=chat(thread_id="t")).status_code == 200
            other = chat(thread_id="t")
            other["messages"][0]["content"] = "Another question"
            refused = client.post("/v1/chat/completions", json=other)
            assert refused.status_code == 400 and "holds another question" in refused.text
            empty = chat() | {"thread_id": ""}
            assert client.post("/v1/chat/completions", json=empty).status_code == 400


def test_a_router_killed_mid_chain_is_resumed_by_another_process(postgres_uri):
    with fake_model_server() as server:
        kill_a_router_mid_chain_and_resume(server.url, postgres_uri, "killed-router", 160)
