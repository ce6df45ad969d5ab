"""Honest replies: an answer cut by answer_max_tokens finishes with "length", and a chain a model
server cuts mid-way gets a 502 whose body carries the steps it had written."""

from __future__ import annotations

import json

import pytest
from starlette.testclient import TestClient

from glimprouter.endpoint import create_app
from glimprouter.prompts import STEP_SEPARATOR, THINK_CLOSE, THINK_OPEN
from tests.fakes import chat, context_at, fake_model_server


@pytest.mark.parametrize(("answer_max_tokens", "finish"), [(2, "length"), (64, "stop")])
def test_an_answer_cut_by_its_token_limit_finishes_with_length(answer_max_tokens, finish):
    body = chat(answer_max_tokens=answer_max_tokens)
    with (
        fake_model_server() as server,
        TestClient(
            create_app(context_at(server.url, token_budget=400, answer_max_tokens=64))
        ) as client,
    ):
        reply = client.post("/v1/chat/completions", json=body).json()
        with client.stream("POST", "/v1/chat/completions", json=body | {"stream": True}) as stream:
            lines = [line for line in stream.iter_lines() if '"finish_reason": "' in line]
    assert reply["usage"]["glimprouter"]["stop_reason"] not in ("token_budget", "max_steps")
    assert reply["choices"][0]["finish_reason"] == finish
    assert lines and f'"finish_reason": "{finish}"' in lines[-1]


def test_a_chain_cut_mid_way_gets_a_502_with_its_steps():
    cut_after_three = lambda index, _: "500" if index >= 3 else None  # noqa: E731
    with fake_model_server(fault=cut_after_three) as server:
        with TestClient(create_app(context_at(server.url, token_budget=160))) as client:
            reply = client.post("/v1/chat/completions", json=chat())
    assert reply.status_code == 502 and reply.headers["x-should-retry"] == "false"
    body = reply.json()
    assert body["error"]["code"] == "model_server_error"
    written = body["glimprouter"]
    # Requests 0-2 answered: step 1 by the small model (H 0.69 < 1), step 2's glimpse (H 1.10)
    # and its large rewrite; step 3's glimpse is the first 500.
    assert written["steps"] == 2 and len(server.requests) == 4
    assert len(written["reasoning_content"].split(STEP_SEPARATOR)) == written["steps"]


@pytest.mark.parametrize("separator", ["\n\n", "\n"])
def test_reasoning_content_is_the_chain_the_answer_continued(separator):
    """Whatever ends a step (step_separator), reasoning_content, whole or streamed, is the
    thinking the answer request sent the model, and a cut chain's 502 joins its steps so too."""
    with fake_model_server() as server:
        context = context_at(server.url, token_budget=160, step_separator=separator)
        with TestClient(create_app(context)) as client:
            whole = client.post("/v1/chat/completions", json=chat()).json()
            answer_prefix = server.requests[-1]["messages"][-1]["content"]
            with client.stream("POST", "/v1/chat/completions", json=chat(stream=True)) as stream:
                chunks = [json.loads(line.removeprefix("data: ")) for line in stream.iter_lines()
                          if line.startswith("data: {")]  # fmt: skip
            answered = len(server.requests)  # the third request from here on fails
            server.fault = lambda index, _: "500" if index >= answered + 3 else None
            cut = client.post("/v1/chat/completions", json=chat()).json()["glimprouter"]
    reasoning = whole["choices"][0]["message"]["reasoning_content"]
    assert answer_prefix == f"{THINK_OPEN}{reasoning}\n{THINK_CLOSE}\n\n"
    assert reasoning.count(separator) >= 2  # three steps, joined
    streamed = "".join(
        chunk["choices"][0]["delta"].get("reasoning_content", "")
        for chunk in chunks
        if chunk["choices"]
    )
    assert streamed == reasoning
    assert cut["steps"] == 2 and reasoning.startswith(cut["reasoning_content"] + separator)
