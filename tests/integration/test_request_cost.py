"""What one request can cost, against real serve-router processes (real uvicorn) and the fake
model servers of tests/fakes.py, counted by what the fake servers received: a 50 KB question is
refused past --max-question-tokens, or bounded by max_chain_prompt_tokens; a max_steps-long chain
of tiny steps stays within worst_case_cost; temperature and top_p are held to their ranges."""

from __future__ import annotations

import sys
from pathlib import Path

import httpx
import pytest

from glimprouter.endpoint.cost import worst_case_cost
from glimprouter.endpoint.limits import RouterLimits
from glimprouter.graph.context import RouterContext
from glimprouter.nodes.common import MAX_REQUESTS_PER_STEP
from tests.fakes import chat, fake_model_server, tiny_steps
from tests.processes import stop
from tests.routers import start_router_at_defaults as start_router
from tests.routers import started_router

# Some 50 KB of words: the fake server counts a word as a token.
LONG_QUESTION = "Add up these numbers: " + "seven " * 8330 + "What is the sum?"


def ask(url: str, body: dict) -> httpx.Response:
    return httpx.post(f"{url}/chat/completions", json=body, timeout=600)


def received(server) -> tuple[int, int]:
    """Model requests and prompt tokens the fake server received, counted as it counts them."""
    prompt = sum(len(m["content"].split()) for r in server.requests for m in r["messages"])
    return len(server.requests), prompt


def test_a_50_kb_question_at_the_defaults_stops_within_its_prompt_bound(router_at_defaults):
    assert len(LONG_QUESTION.encode()) > 50_000
    bound = RouterContext().max_chain_prompt_tokens
    server, url = router_at_defaults
    server.requests.clear()
    reply = ask(url, chat(LONG_QUESTION))
    requests, prompt = received(server)
    assert reply.status_code == 200, reply.text
    usage = reply.json()["usage"]
    assert usage["glimprouter"]["stop_reason"] == "max_chain_prompt_tokens"
    assert usage["prompt_tokens"] == prompt  # the router counted what the servers received
    # Tens of steps, each re-sending the question: under the bound, and not far under it.
    assert bound / 2 < prompt <= bound
    assert 20 < requests <= worst_case_cost(RouterContext()).model_requests


def test_the_readme_states_the_worst_case_cost_at_the_defaults():
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    assert f"{worst_case_cost(RouterContext(), RouterLimits())};" in readme


def test_a_question_past_max_question_tokens_is_a_400_naming_the_flag():
    with fake_model_server() as server:
        router, url = start_router(server.url, "--max-question-tokens", "10000")
        try:
            refused = ask(url, chat(LONG_QUESTION))
            served = ask(url, chat("What is 2 + 2?"))
        finally:
            stop(router)
        assert refused.status_code == 400
        error = refused.json()["error"]
        assert "--max-question-tokens" in error["message"]
        assert (error["param"], error["code"]) == ("messages", "question_too_long")
        assert served.status_code == 200
        assert all("seven seven" not in str(r["messages"]) for r in server.requests)


def test_a_max_steps_long_chain_of_tiny_steps_stays_within_the_worst_case_cost():
    """At max_steps 64 the tiny steps run to max_steps; every count the fake server keeps is
    within what worst_case_cost computes from the same settings."""
    flags = {"--max-steps": "64", "--token-budget": "4096"}
    with fake_model_server(fault=tiny_steps) as server:
        router, url = start_router(server.url, *(part for item in flags.items() for part in item))
        try:
            reply = ask(url, chat("What is 2 + 2?"))
        finally:
            stop(router)
        requests, prompt = received(server)
    assert reply.status_code == 200, reply.text
    usage = reply.json()["usage"]
    assert usage["glimprouter"]["stop_reason"] == "max_steps"
    most = worst_case_cost(RouterContext(max_steps=64, token_budget=4096), RouterLimits())
    assert requests <= most.model_requests
    assert prompt <= most.prompt_tokens
    assert usage["completion_tokens"] <= most.completion_tokens


def long_steps(index: int, request: dict) -> dict | None:
    """A fault hook: every step 100 tokens (warming requests go out as it streams), until the
    answer."""
    if request["messages"][-1]["content"].endswith("</think>\n\n"):
        return None
    return {"content": " ".join(f"w{index}x{k}" for k in range(100)) + "\n\n"}


def test_warming_requests_on_two_servers_stay_within_the_worst_case_cost():
    """Each role on a server of its own: the idle one is warmed as steps stream, and every
    model request both servers received, the warming ones included, is within worst_case_cost
    (which counted steps' requests only, and was passed)."""
    flags = ["--max-steps", "8", "--step-max-tokens", "128", "--token-budget", "4096"]
    with fake_model_server(fault=long_steps) as small, fake_model_server(fault=long_steps) as large:
        command = [sys.executable, "-m", "glimprouter.cli", "serve-router", "--port", "0",
                   "--small-url", small.url, "--large-url", large.url, "--max-retries", "0",
                   *flags]  # fmt: skip
        router, url = started_router(command)
        try:
            reply = ask(url, chat("What is 2 + 2?"))
        finally:
            stop(router)
        requests = [*small.requests, *large.requests]
    assert reply.status_code == 200, reply.text
    assert reply.json()["usage"]["glimprouter"]["stop_reason"] == "max_steps"
    # A warming request: one greedy token without logprobs (a glimpse probe has them).
    warming = [r for r in requests if r.get("max_completion_tokens", r.get("max_tokens")) == 1
               and not r.get("logprobs")]  # fmt: skip
    context = RouterContext(small_base_url=small.url, large_base_url=large.url, max_steps=8,
                            step_max_tokens=128, token_budget=4096)  # fmt: skip
    assert len(warming) > 8  # more than one a step: as the steps streamed
    assert len(requests) > MAX_REQUESTS_PER_STEP * 8 + 1  # past the steps' requests alone
    assert len(requests) <= worst_case_cost(context, RouterLimits()).model_requests


def test_tiny_steps_stop_at_a_low_prompt_bound_and_stay_under_it():
    with fake_model_server(fault=tiny_steps) as server:
        router, url = start_router(server.url, "--max-chain-prompt-tokens", "3000")
        try:
            reply = ask(url, chat("What is 2 + 2?"))
            raised = ask(url, chat("What is 2 + 2?", max_chain_prompt_tokens=3001))
        finally:
            stop(router)
        assert reply.status_code == 200, reply.text
        assert reply.json()["usage"]["glimprouter"]["stop_reason"] == "max_chain_prompt_tokens"
        assert sum(len(m["content"].split()) for m in server.requests[-1]["messages"]) > 0
        assert raised.status_code == 400
        assert "--max-chain-prompt-tokens-limit" in raised.json()["error"]["message"]
    requests, prompt = received(server)
    first = reply.json()["usage"]["prompt_tokens"]
    assert first <= 3000 and prompt == first  # the refused request sent nothing


@pytest.fixture(scope="module")
def router_at_defaults():
    """The fake server writing tiny steps, and a serve-router process at the defaults on it."""
    with fake_model_server(fault=tiny_steps) as server:
        router, url = start_router(server.url)
        try:
            yield server, url
        finally:
            stop(router)


@pytest.mark.parametrize(
    ("field", "value"),
    [("temperature", 1e308), ("temperature", 2.5), ("temperature", -1), ("top_p", 5), ("top_p", 0)],
)
def test_sampling_out_of_range_is_a_400_naming_the_field(router_at_defaults, field, value):
    server, url = router_at_defaults
    reply = ask(url, chat(**{field: value}))
    assert reply.status_code == 400
    error = reply.json()["error"]
    assert (error["param"], error["code"]) == (field, "invalid_value")
    assert field in error["message"]
