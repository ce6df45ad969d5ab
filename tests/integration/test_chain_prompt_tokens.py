"""max_chain_prompt_tokens in the graph, against the fake model server writing tiny steps (so a
chain never ends by itself): whichever strategy sends the most requests per step, the prompt
tokens the fake server received stay within the bound, and the chain stops with its stop reason
and still answers."""

from __future__ import annotations

import asyncio

import pytest

from glimprouter import graph, run_config
from glimprouter.graph.invoke import run_question
from tests.fakes import context_at, fake_model_server, tiny_steps

BOUND = 2000
QUESTION = "What is the sum of " + "one and " * 40 + "one?"


@pytest.mark.parametrize(
    "settings",
    [
        {"method": "glimprouter", "threshold": 0},  # a glimpse and a large step each
        {"method": "glimprouter", "threshold": 0, "glimpse_mode": "probe"},
        {"method": "specreason", "threshold": 9},  # a draft, a judge call, a rewrite each
        {"method": "small-only"},
    ],
    ids=lambda settings: "-".join(str(value) for value in settings.values()),
)
async def test_every_strategy_stays_within_its_prompt_bound(settings):
    with fake_model_server(fault=tiny_steps) as server:
        context = context_at(
            server.url, max_steps=400, token_budget=8192, max_chain_prompt_tokens=BOUND, **settings
        )
        result = await asyncio.wait_for(
            run_question(graph, {"question": QUESTION}, context, run_config(context)), 120
        )
    sent = sum(len(m["content"].split()) for r in server.requests for m in r["messages"])
    assert result["stop_reason"] == "max_chain_prompt_tokens"
    assert result["answer"]
    assert sum(u["prompt_tokens"] for u in result["usage"].values()) == sent
    assert BOUND / 2 < sent <= BOUND
