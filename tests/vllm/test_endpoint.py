"""`glimprouter serve-router` against real vLLM: the command runs as a subprocess, in front of
the test session's vLLM server (through a proxy that can hold its requests), and is driven through
the official SDK. The in-process tests, against the fake model server, are
tests/integration/test_endpoint.py.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from urllib.parse import urlparse

import httpx
import openai
import pytest

from glimprouter.endpoint.keys import KEYS_ENV
from tests.fakes import chat
from tests.processes import Lines, running, stop
from tests.proxy import KillableProxy
from tests.routers import (
    kill_a_router_mid_chain_and_resume,
    metrics_env,
    scrape,
    start_router,
    total,
)

# Real vLLM behind a `glimprouter serve-router` subprocess. The model writes ~4 tokens/s on a
# shared CPU, so every chain is a few short steps.
ROUTER_FLAGS = [
    "--step-max-tokens", "16", "--token-budget", "48", "--answer-max-tokens", "16",
    "--request-timeout", "180", "--seed", "0", "--max-token-budget", "64",
    "--min-threshold", "0",  # the tests route whole chains to the large model with threshold 0
    # One key sends 64 requests that the model proxy holds until all are in flight together.
    "--max-requests-per-key", "64",
]  # fmt: skip


@pytest.fixture(scope="module")
def model_proxy(vllm_base_url):
    """The router's way to the model server, where tests can hold its requests."""
    proxy = KillableProxy(urlparse(vllm_base_url).port)
    yield proxy
    proxy.close()


# The router's API key, given as its environment variable (what a deployment does: no key in ps).
ROUTER_KEY = "sk-router-test-5f1c0a"


@pytest.fixture(scope="module")
def router_url(model_proxy, tmp_path_factory):
    from glimprouter.vllm_launcher.command import free_port

    port = free_port()
    command = [sys.executable, "-m", "glimprouter.cli", "serve-router", "--port", str(port)]
    command += ["--small-url", model_proxy.url, "--large-url", model_proxy.url, *ROUTER_FLAGS]
    log = tmp_path_factory.mktemp("router") / "stderr"
    with (
        log.open("w") as stderr,
        running(
            command,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env={**os.environ, KEYS_ENV: ROUTER_KEY},
        ) as router,
    ):
        printed = Lines(router.stdout)
        ready = printed.wait_for(
            lambda line: line if line.startswith("serving ") else None, 300, "the ready line"
        )
        assert ready.startswith("serving 'glimprouter' at "), ready
        assert ready.rstrip().endswith("1 API key)"), ready
        url = ready.split()[3]
        assert url == f"http://127.0.0.1:{port}/v1"
        refused = httpx.post(f"{url}/chat/completions", json=chat(), timeout=60)
        assert refused.status_code == 401, refused.text
        yield url
        assert stop(router) == 0, "serve-router did not stop cleanly on SIGTERM"
        everything = printed.rest(60) + log.read_text()
        assert ROUTER_KEY not in everything, "the API key shows in the router's output"


@pytest.mark.vllm
def test_sdk_lists_the_model_and_gets_a_routed_completion(router_url):
    sdk = openai.OpenAI(base_url=router_url, api_key=ROUTER_KEY, max_retries=0, timeout=600)
    assert [model.id for model in sdk.models.list()] == ["glimprouter"]
    with pytest.raises(openai.BadRequestError, match=r"limit of 64 \(--max-token-budget\)"):
        sdk.chat.completions.create(**chat(), max_tokens=65)
    reply = sdk.chat.completions.create(**chat())
    reasoning = reply.choices[0].message.model_extra["reasoning_content"]
    routing = reply.usage.model_extra["glimprouter"]
    assert reasoning and routing["steps"] >= 1
    assert reasoning.count("\n\n") >= routing["steps"] - 1
    # "length" where the chain was cut short; otherwise "stop", or "length" for an answer that
    # reached answer_max_tokens (the model's to decide).
    cut_short = {"token_budget", "max_steps", "max_chain_tokens", "max_chain_prompt_tokens",
                 "context_length"}  # fmt: skip
    assert reply.choices[0].finish_reason in (
        {"length"} if routing["stop_reason"] in cut_short else {"stop", "length"}
    )
    assert routing["small"]["requests"] >= routing["steps"] - routing["large_steps"]
    assert routing["large"]["requests"] >= routing["large_steps"] + 1  # + the answer
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    assert 0 < reply.usage.completion_tokens_details.reasoning_tokens <= 48


@pytest.mark.vllm
def test_sdk_streams_reasoning_then_content_then_usage(router_url):
    sdk = openai.OpenAI(base_url=router_url, api_key=ROUTER_KEY, max_retries=0, timeout=600)
    stream = sdk.chat.completions.create(
        **chat(), stream=True, stream_options={"include_usage": True}, extra_body={"max_steps": 2}
    )
    kinds = []
    for chunk in stream:
        if chunk.choices:
            delta = chunk.choices[0].delta
            if "reasoning_content" in delta.model_extra:
                kinds.append("reasoning")
            if delta.content:
                kinds.append("content")
        else:
            usage = chunk.usage
    steps = usage.model_extra["glimprouter"]["steps"]
    assert kinds.count("reasoning") == steps >= 1
    assert kinds[:steps] == ["reasoning"] * steps  # every step before the answer
    assert set(kinds[steps:]) <= {"content"}


@pytest.mark.vllm
async def test_concurrent_sdk_requests_run_together_with_their_own_knobs(router_url, model_proxy):
    sdk = openai.AsyncOpenAI(base_url=router_url, api_key=ROUTER_KEY, max_retries=0, timeout=600)
    thresholds = [0, 1e9, 0, 1e9]
    model_proxy.hold_until_together(4)  # the chains get on only if all four are in flight
    replies = await asyncio.gather(
        *(
            sdk.chat.completions.create(
                **chat(f"What is {n} + {n}?"),
                extra_body={"threshold": threshold, "max_steps": 2, "answer_max_tokens": 8},
            )
            for n, threshold in enumerate(thresholds)
        )
    )
    assert len({reply.id for reply in replies}) == 4
    for threshold, reply in zip(thresholds, replies, strict=True):
        routing = reply.usage.model_extra["glimprouter"]
        assert 1 <= routing["steps"] <= 2
        assert routing["large_steps"] == (routing["steps"] if threshold == 0 else 0)
    async with httpx.AsyncClient() as http:
        health = (await http.get(router_url.removesuffix("/v1") + "/health")).json()
    # The peak is the server's since it started, these four at least.
    assert health["running"] == 0 and health["peak_running"] >= 4


@pytest.mark.vllm
async def test_64_concurrent_sdk_requests_complete_with_their_own_routing(router_url, model_proxy):
    sdk = openai.AsyncOpenAI(base_url=router_url, api_key=ROUTER_KEY, max_retries=0, timeout=1200)
    thresholds = [0 if n % 2 else 1e9 for n in range(64)]
    model_proxy.hold_until_together(64)
    replies = await asyncio.gather(
        *(
            sdk.chat.completions.create(
                **chat(f"Question {n:02d}: what is {n} + 7?"),
                extra_body={
                    "threshold": threshold,
                    "step_max_tokens": 8,
                    "token_budget": 16,
                    "answer_max_tokens": 8,
                },
            )
            for n, threshold in enumerate(thresholds)
        )
    )
    assert len({reply.id for reply in replies}) == 64
    for threshold, reply in zip(thresholds, replies, strict=True):
        routing = reply.usage.model_extra["glimprouter"]
        assert routing["steps"] >= 1 and routing["stop_reason"]
        # Each reply was routed by its own request's threshold: nothing crossed over.
        assert routing["large_steps"] == (routing["steps"] if threshold == 0 else 0)
    async with httpx.AsyncClient() as http:
        health = (await http.get(router_url.removesuffix("/v1") + "/health")).json()
    assert health["running"] == 0 and health["peak_running"] >= 64


@pytest.mark.vllm
def test_a_router_killed_mid_chain_on_vllm_is_resumed_by_another_router(
    vllm_base_url, postgres_uri
):
    """Two serve-router processes in front of the session's vLLM and one PostgreSQL."""
    kill_a_router_mid_chain_and_resume(vllm_base_url, postgres_uri, "vllm-killed-router", 64)


@pytest.mark.vllm
async def test_two_workers_in_front_of_vllm_serve_and_count_every_chain(vllm_base_url, tmp_path):
    """serve-router --workers 2 on the session's vLLM: concurrent requests on connections of
    their own are answered, and /metrics, from either worker, counts every chain and token."""
    _, env = metrics_env(tmp_path)
    router, url = start_router(
        vllm_base_url, None, 48, "--workers", "2", "--request-timeout", "180", env=env
    )
    try:
        async with httpx.AsyncClient(timeout=600, headers={"Connection": "close"}) as http:
            body = {"max_steps": 2, "answer_max_tokens": 8}
            replies = await asyncio.gather(
                *(
                    http.post(f"{url}/chat/completions", json=chat(f"What is {n} + 1?") | body)
                    for n in range(4)
                )
            )
            assert [reply.status_code for reply in replies] == [200] * 4, replies[0].text
            usages = [reply.json()["usage"]["glimprouter"] for reply in replies]
            scraped = [scrape(url) for _ in range(4)]
    finally:
        assert stop(router) == 0
    for samples in scraped:
        assert total(samples, "glimprouter_chains_finished_total") == 4
        assert total(samples, "glimprouter_steps_total") == sum(u["steps"] for u in usages)
        for role in ("small", "large"):
            assert total(samples, "glimprouter_model_tokens_total", role=role) == sum(
                u[role]["prompt_tokens"] + u[role]["completion_tokens"] for u in usages
            )
