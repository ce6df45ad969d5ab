"""`glimprouter serve-router`: the OpenAI-compatible endpoint.

These tests run the app in-process against the fake model server of tests/fakes.py; the command
as a subprocess against real vLLM, driven through the official SDK, is tests/vllm/test_endpoint.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import threading
from typing import Any

import httpx
import openai
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from glimprouter.endpoint import RouterLimits, create_app
from glimprouter.endpoint.app import MAX_BODY_BYTES
from glimprouter.endpoint.responses import finish_reason
from glimprouter.errors import ConfigError
from glimprouter.prompts import render_question
from glimprouter.strategies import STRATEGIES
from tests.fakes import chat, context_at, fake_model_server
from tests.processes import wait_until_async

QUESTION = "What is 2 + 2?"


def tag_of(question: str, task: str = "math") -> str:
    """What the fake model server calls a question in the steps it writes (the first 8 hex
    digits of the rendered question's SHA-1)."""
    return hashlib.sha1(render_question(question, task).encode()).hexdigest()[:8]


@pytest.fixture(scope="module")
def client(backend):
    # Wide enough for the knob tests to try every method, threshold and glimpse mode; what a
    # default server refuses is tests/integration/test_endpoint_limits.py.
    limits = RouterLimits(
        max_token_budget=128,
        max_top_k=5,
        allow_methods=tuple(STRATEGIES),
        allow_glimpse_modes=("stream", "probe"),
        min_threshold=0,
    )
    with TestClient(create_app(context_at(backend.url, top_k=5), limits)) as test_client:
        yield test_client


@pytest.fixture
def sdk(client):
    """The official OpenAI SDK, talking to the in-process app."""
    return openai.OpenAI(
        base_url="http://testserver/v1", api_key="unused", http_client=client, max_retries=0
    )


def test_models_lists_the_served_name(backend):
    app = create_app(context_at(backend.url), served_model_name="router-7b")
    with TestClient(app) as test_client:
        sdk = openai.OpenAI(base_url="http://testserver/v1", api_key="-", http_client=test_client)
        assert [model.id for model in sdk.models.list()] == ["router-7b"]
        with pytest.raises(openai.NotFoundError, match="serves 'router-7b'"):
            sdk.chat.completions.create(
                model="glimprouter", messages=[{"role": "user", "content": "q"}]
            )


def test_completion_carries_answer_reasoning_and_usage_per_model(client, sdk):
    tag = tag_of(QUESTION)
    reply = sdk.chat.completions.create(**chat())
    message = reply.choices[0].message
    assert message.content == f"The answer to {tag} is \\boxed{{4}}."
    assert message.model_extra["reasoning_content"] == (
        f"Step 0 on {tag}.\n\nStep 1 on {tag}.\n\nLast step on {tag}."
    )
    assert reply.choices[0].finish_reason == "stop"
    usage = reply.usage
    routing = usage.model_extra["glimprouter"]
    # Threshold 1.0 against entropies ln 2, ln 3, ln 4: small, large, large. Every step starts
    # with the small model's streamed glimpse; the large model writes two steps and the answer.
    assert (routing["steps"], routing["large_steps"], routing["stop_reason"]) == (
        3,
        2,
        "end_of_sequence",
    )
    assert routing["small"]["requests"] == 3 and routing["large"]["requests"] == 3
    assert usage.prompt_tokens == sum(routing[m]["prompt_tokens"] for m in ("small", "large"))
    assert usage.completion_tokens == sum(
        routing[m]["completion_tokens"] for m in ("small", "large")
    )
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert usage.completion_tokens_details.reasoning_tokens == 4 + 4 + 4

    raw = client.post("/v1/chat/completions", json=chat()).json()
    assert set(raw) == {"id", "object", "created", "model", "choices", "usage"}
    assert raw["object"] == "chat.completion" and raw["model"] == "glimprouter"
    assert raw["id"].startswith("chatcmpl-") and raw["id"] != reply.id
    assert set(raw["choices"][0]) == {"index", "message", "logprobs", "finish_reason"}


def test_stream_sends_steps_then_answer_then_usage(client, sdk):
    whole = sdk.chat.completions.create(**chat())
    chunks = list(
        sdk.chat.completions.create(**chat(), stream=True, stream_options={"include_usage": True})
    )
    assert len({chunk.id for chunk in chunks}) == 1
    assert {chunk.object for chunk in chunks} == {"chat.completion.chunk"}
    assert chunks[0].choices[0].delta.role == "assistant"
    deltas = [chunk.choices[0].delta for chunk in chunks if chunk.choices]
    reasoning = [d.model_extra.get("reasoning_content") for d in deltas]
    content = [d.content for d in deltas]
    # One chunk per step, then the answer in one chunk: all reasoning before any content.
    assert [bool(r) for r in reasoning] == [False, True, True, True, False, False]
    assert [bool(c) for c in content] == [False, False, False, False, True, False]
    assert (
        "".join(filter(None, reasoning))
        == whole.choices[0].message.model_extra["reasoning_content"]
    )
    assert "".join(filter(None, content)) == whole.choices[0].message.content
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == [] and all(chunk.usage is None for chunk in chunks[:-1])
    assert chunks[-1].usage.model_extra["glimprouter"]["steps"] == 3

    raw = client.post("/v1/chat/completions", json=chat(stream=True)).text
    events = raw.split("\n\n")
    assert events[-2:] == ["data: [DONE]", ""]
    assert all(event.startswith("data: {") for event in events[:-2])
    assert "usage" not in json.loads(events[0].removeprefix("data: "))


@pytest.mark.parametrize(
    ("fields", "expect"),
    [
        ({"threshold": 0}, {"large_steps": 3, "steps": 3}),
        ({"threshold": 1e9, "answer_model": "small"}, {"large_steps": 0, "large_requests": 0}),
        ({"method": "large-only"}, {"large_steps": 3, "small_requests": 0}),
        ({"top_k": 1}, {"large_steps": 0}),  # one candidate: entropy 0, always small
        ({"glimpse_mode": "probe"}, {"small_requests": 3 + 1}),  # a probe per step, one step
        ({"max_tokens": 6}, {"stop_reason": "token_budget", "finish": "length"}),
        ({"max_completion_tokens": 6}, {"stop_reason": "token_budget"}),
        ({"token_budget": 6}, {"stop_reason": "token_budget"}),
        ({"max_steps": 1}, {"steps": 1, "stop_reason": "max_steps", "finish": "length"}),
        # Steps cut at two tokens never end the sequence: the chain stops when one repeats.
        ({"step_max_tokens": 2}, {"steps": 4, "stop_reason": "repeated_step"}),
    ],
)
def test_routing_knobs_in_the_body_reach_the_run(client, fields, expect):
    reply = client.post("/v1/chat/completions", json=chat(**fields))
    assert reply.status_code == 200, reply.text
    body = reply.json()
    routing = body["usage"]["glimprouter"]
    seen = {
        "steps": routing["steps"],
        "large_steps": routing["large_steps"],
        "small_requests": routing["small"]["requests"],
        "large_requests": routing["large"]["requests"],
        "stop_reason": routing["stop_reason"],
        "finish": body["choices"][0]["finish_reason"],
    }
    assert {key: seen[key] for key in expect} == expect


def test_sampling_task_and_answer_length_reach_the_model_server(client, backend):
    backend.requests.clear()
    question = "Name a prime."
    reply = client.post(
        "/v1/chat/completions",
        json=chat(question, temperature=0.25, top_p=0.5, seed=7, task="plain", answer_max_tokens=3),
    ).json()
    sampled = [r for r in backend.requests if r["max_completion_tokens"] > 1]
    assert {(r["temperature"], r["top_p"], r["seed"]) for r in sampled} == {(0.25, 0.5, 7)}
    assert backend.requests[-1]["max_completion_tokens"] == 3
    assert tag_of(question, "plain") in reply["choices"][0]["message"]["reasoning_content"]


def test_last_user_message_is_the_question(client):
    body = chat()
    body["messages"] = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "an earlier question"},
        {"role": "assistant", "content": "an earlier answer"},
        {
            "role": "user",
            "content": [{"type": "text", "text": "What is"}, {"type": "text", "text": "2 + 2?"}],
        },
    ]
    reply = client.post("/v1/chat/completions", json=body).json()
    assert tag_of("What is\n2 + 2?") in reply["choices"][0]["message"]["content"]


@pytest.mark.parametrize(
    ("body", "status", "param", "needle"),
    [
        (b"{not json", 400, None, "not valid JSON"),
        (b'{"model": NaN}', 400, None, "NaN is not JSON"),
        ([1, 2], 400, None, "JSON object"),
        ({"model": "glimprouter"}, 400, "messages", "messages is missing"),
        (chat() | {"messages": []}, 400, "messages", "messages is missing"),
        (chat() | {"messages": [{"role": "system", "content": "x"}]}, 400, "messages", "no user"),
        (chat() | {"messages": [{"role": "robot", "content": "x"}]}, 400, "messages[0]", "role"),
        (chat() | {"messages": ["hi"]}, 400, "messages[0]", "role"),
        (
            chat() | {"messages": [{"role": "user", "content": "q"}, {"role": "assistant"}]},
            400,
            "messages[1]",
            "follows the last user message",
        ),
        (chat(" \n "), 400, "messages[0]", "empty"),
        (json.dumps(chat("\ud800 lone")).encode(), 400, "messages[0]", "not valid Unicode"),
        (
            chat([{"type": "image_url", "image_url": {"url": "x"}}]),
            400,
            "messages[0].content",
            "only text parts",
        ),
        (chat(None), 400, "messages[0].content", "string or a non-empty list"),
        (chat(foo=1), 400, "foo", "unknown field(s) ['foo']"),
        (chat(small_base_url="http://evil/v1"), 400, "small_base_url", "unknown field"),
        (chat(tools=[{"type": "function"}]), 400, "tools", "tools is not supported"),
        (chat(logprobs=True), 400, "logprobs", "not supported"),
        (chat(threshold="high"), 400, "threshold", "must be a finite number"),
        (chat(threshold=True), 400, "threshold", "must be a finite number"),
        (b'{"model": "glimprouter", "threshold": 1e999}', 400, "threshold", "finite number"),
        (chat(top_k=2.5), 400, "top_k", "must be a 64-bit integer"),
        (chat(seed=2**70), 400, "seed", "64-bit integer"),
        (chat(stream="yes"), 400, "stream", "must be a boolean"),
        (chat(stream=True, stream_options={"include_usage": 1}), 400, "stream_options", "bool"),
        (chat() | {"model": "gpt-4o"}, 404, "model", "serves 'glimprouter'"),
        ({"messages": chat()["messages"]}, 400, "model", "model is required"),
        (chat(n=2), 400, "n", "one chain of thought per request"),
        (chat(threshold=-1), 400, "threshold", "threshold=-1 is negative"),
        (chat(method="magic"), 400, "method", "not a method this server runs"),
        (chat(glimpse_mode="peek"), 400, "glimpse_mode", "['stream', 'probe']"),
        (chat(answer_model="medium"), 400, "answer_model", "['small', 'large']"),
        (chat(top_p=0), 400, "top_p", "(0, 1]"),
        (chat(token_budget=129), 400, "token_budget", "limit of 128 (--max-token-budget)"),
        (chat(max_tokens=1000), 400, "max_tokens", "max_tokens=1000 is above this server's"),
        (chat(max_tokens=8, token_budget=8), 400, "token_budget", "give only one of"),
        (chat(top_k=6), 400, "top_k", "limit of 5 (--max-top-k)"),
        (chat(max_steps=10**4), 400, "max_steps", "graph's limit of 8192"),
        (chat(max_steps=600), 400, "max_steps", "limit of 512 (--max-steps-limit)"),
        (chat(answer_max_tokens=17), 400, "answer_max_tokens", "(--max-answer-tokens)"),
        (chat(task="poetry"), 400, "task", "valid tasks"),
    ],
)
def test_bad_requests_get_an_openai_error_naming_the_field(
    client, backend, body, status, param, needle
):
    before = len(backend.requests)
    if isinstance(body, bytes):
        reply = client.post(
            "/v1/chat/completions", content=body, headers={"Content-Type": "application/json"}
        )
    else:
        reply = client.post("/v1/chat/completions", json=body)
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert needle in error["message"]
    assert len(backend.requests) == before, "a refused request must not reach a model server"


def test_sdk_raises_bad_request_naming_the_bound(sdk):
    with pytest.raises(openai.BadRequestError, match=r"--max-token-budget"):
        sdk.chat.completions.create(**chat(), extra_body={"token_budget": 10**6})


def test_neutral_values_of_unsupported_fields_pass(client):
    body = chat(logprobs=False, tools=[], stop=None, presence_penalty=0, user="u1", store=False)
    assert client.post("/v1/chat/completions", json=body).status_code == 200


def test_oversized_body_wrong_method_and_path_are_json_errors(client):
    big = client.post("/v1/chat/completions", json=chat("x" * MAX_BODY_BYTES))
    assert big.status_code == 413 and big.json()["error"]["code"] == "body_too_large"
    assert client.get("/v1/chat/completions").json()["error"]["message"]
    assert client.get("/v1/nothing").status_code == 404
    assert client.get("/v1/nothing").json()["error"]["type"] == "invalid_request_error"


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}/v1"


@pytest.mark.parametrize("stream", [False, True])
def test_unreachable_model_server_is_a_502_without_retries(stream):
    with TestClient(create_app(context_at(closed_port_url()))) as test_client:
        reply = test_client.post("/v1/chat/completions", json=chat(stream=stream))
    assert reply.status_code == 502
    assert reply.headers["x-should-retry"] == "false"
    error = reply.json()["error"]
    assert error["type"] == "server_error"
    assert "the small model's server failed" in error["message"]
    assert "Traceback" not in reply.text


def test_model_server_failing_mid_stream_ends_the_stream_with_an_error():
    with (
        fake_model_server(fail_model="large") as failing,
        TestClient(create_app(context_at(failing.url))) as test_client,
    ):
        sdk = openai.OpenAI(base_url="http://testserver/v1", api_key="-", http_client=test_client)
        seen = []
        with pytest.raises(openai.APIError, match="the large model's server failed"):
            for chunk in sdk.chat.completions.create(**chat(), stream=True):
                seen.append(chunk.choices[0].delta.model_extra.get("reasoning_content"))
        # The first step (small) was streamed before the large model failed on the second.
        assert seen[1].startswith("Step 0")
        with pytest.raises(openai.InternalServerError, match="the large model's server"):
            sdk.with_options(max_retries=0).chat.completions.create(**chat())


def test_misconfigured_limits_fail_at_startup(backend):
    with pytest.raises(ConfigError, match="token_budget=64 is above --max-token-budget 32"):
        create_app(context_at(backend.url), RouterLimits(max_token_budget=32))
    with pytest.raises(ConfigError, match="--max-concurrency 0"):
        create_app(context_at(backend.url), RouterLimits(max_concurrency=0))


@pytest.mark.parametrize(
    ("stop_reason", "expected"),
    [
        ("think_end", "stop"),
        ("end_of_sequence", "stop"),
        ("repeated_step", "stop"),
        ("token_budget", "length"),
        ("max_steps", "length"),
        ("context_length", "length"),
    ],
)
def test_finish_reason(stop_reason, expected):
    assert finish_reason(stop_reason) == expected


def together(count: int):
    """A fault hook that holds the first `count` requests until all of them have arrived: they
    reach the server only if they were in flight at once (else the barrier breaks: a 500)."""
    barrier = threading.Barrier(count, timeout=60)

    def fault(index: int, request: dict[str, Any]) -> str | None:
        if index < count:
            try:
                barrier.wait()
            except threading.BrokenBarrierError:
                return "500"
        return None

    return fault


@pytest.mark.parametrize(("max_concurrency", "peak"), [(64, 4), (1, 1)])
async def test_concurrent_requests_keep_their_own_question_and_knobs(max_concurrency, peak):
    questions = [f"What is {n} + {n}?" for n in range(4)]
    thresholds = [0, 1e9, 0, 1e9]
    with fake_model_server(fault=together(4) if max_concurrency > 1 else None) as slow:
        limits = RouterLimits(max_concurrency=max_concurrency, min_threshold=0)
        app = create_app(context_at(slow.url), limits)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://router") as http:
            replies = await asyncio.gather(
                *(
                    http.post("/v1/chat/completions", json=chat(q, threshold=t), timeout=30)
                    for q, t in zip(questions, thresholds, strict=True)
                )
            )
            health = (await http.get("/health")).json()
    bodies = [reply.json() for reply in replies]
    assert len({body["id"] for body in bodies}) == 4
    for question, threshold, body in zip(questions, thresholds, bodies, strict=True):
        reasoning = body["choices"][0]["message"]["reasoning_content"]
        assert reasoning.count(tag_of(question)) == 3, reasoning
        routing = body["usage"]["glimprouter"]
        assert routing["large_steps"] == (3 if threshold == 0 else 0)
    assert health == {"status": "ok", "running": 0, "waiting": 0, "peak_running": peak}


async def test_a_client_that_leaves_stops_its_run():
    with fake_model_server(fault=lambda index, request: "until_closed") as slow:
        app = create_app(context_at(slow.url))
        left = asyncio.Event()
        sent: list[dict[str, Any]] = []
        body = json.dumps(chat()).encode()
        messages = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive():
            if messages:
                return messages.pop()
            await left.wait()
            return {"type": "http.disconnect"}

        async def send(message):
            sent.append(message)

        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/v1/chat/completions",
            "raw_path": b"/v1/chat/completions",
            "query_string": b"",
            "root_path": "",
            "headers": [(b"content-type", b"application/json")],
            "client": ("127.0.0.1", 1),
            "server": ("router", 80),
        }
        handling = asyncio.create_task(app(scope, receive, send))
        await wait_until_async(lambda: slow.requests, 30, "the run's first model request")
        left.set()
        await asyncio.wait_for(handling, timeout=30)
        assert sent[0]["status"] == 499
        # The run's open model request is closed (vLLM would abort it) and the run is gone.
        await wait_until_async(lambda: slow.closed == [0], 30, "the model request closed")
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://router"
        ) as http:

            async def health() -> dict[str, Any]:
                return (await http.get("/health")).json()

            deadline = asyncio.get_running_loop().time() + 30
            while (await health())["running"]:
                assert asyncio.get_running_loop().time() < deadline, "the run is still going"
                await asyncio.sleep(0.02)
        assert len(slow.requests) == 1


# Three kinds of body: any JSON; a request whose fields hold any JSON; a request whose fields
# hold plausible values, in and out of range, which often runs (against the fake server).
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
plausible_values = {
    "threshold": st.floats(-0.5, 3),
    "large_rate": st.floats(0, 1.2),
    "top_k": st.integers(-1, 7),
    "token_budget": st.integers(0, 150),
    "max_tokens": st.integers(0, 150),
    "step_max_tokens": st.integers(0, 20),
    "max_steps": st.integers(0, 5),
    "answer_max_tokens": st.integers(0, 20),
    "temperature": st.floats(0, 2),
    "top_p": st.floats(0, 1),
    "seed": st.integers(-(2**63), 2**63 - 1),
    "method": st.sampled_from(["glimprouter", "random", "large-only", "step-ppl", "nope"]),
    "glimpse_mode": st.sampled_from(["stream", "probe", "x"]),
    "answer_model": st.sampled_from(["small", "large", "huge"]),
    "task": st.sampled_from(["math", "plain", "code", "multiple_choice", "essay"]),
    "stream": st.booleans(),
    "stream_options": st.fixed_dictionaries({"include_usage": st.booleans()}),
    "n": st.integers(0, 2),
}
text_content = st.text(min_size=1, max_size=30) | st.lists(
    st.fixed_dictionaries({"type": st.just("text"), "text": st.text(max_size=10)}), min_size=1
)
plausible_messages = st.tuples(
    st.lists(st.fixed_dictionaries({"role": st.just("system"), "content": text_content})),
    st.fixed_dictionaries({"role": st.just("user"), "content": text_content}),
).map(lambda parts: [*parts[0], parts[1]])
any_messages = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "system", "assistant", "bot"])},
        optional={"content": text_content | json_values},
    ),
    max_size=3,
)
wild_request = st.fixed_dictionaries(
    {"model": st.just("glimprouter") | json_values, "messages": any_messages | json_values},
    optional={name: json_values for name in plausible_values},
)
plausible_request = st.fixed_dictionaries(
    {"model": st.just("glimprouter"), "messages": plausible_messages},
    optional=plausible_values,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=json_values | wild_request | plausible_request)
def test_fuzzed_bodies_get_a_completion_or_an_error_object(client, body):
    reply = client.post("/v1/chat/completions", json=body)
    event(f"HTTP {reply.status_code}")  # --hypothesis-show-statistics: how many got through
    assert reply.status_code < 500, reply.text
    if reply.status_code != 200:
        error = reply.json()["error"]
        assert isinstance(error["message"], str) and error["type"] == "invalid_request_error"
    elif reply.headers["content-type"].startswith("text/event-stream"):
        assert reply.text.endswith("data: [DONE]\n\n") and '"error"' not in reply.text
    else:
        assert reply.json()["choices"][0]["message"]["role"] == "assistant"
