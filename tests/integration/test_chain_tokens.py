"""max_chain_tokens against the fake model server: the usage of a run counts every token its
requests generated (glimpses, probes, streams cut off after their first token, drafts, judge
calls, the answer), and a chain stops when that count reaches its bound, its answer still
written within it.

The fake's tokens are words: a step is 4 of them, the answer 6. Under the default threshold
(1.0 nats against glimpse entropies ln 2, ln 3, ln 4) the small model keeps step 0 and the large
model writes steps 1 and 2, each after a streamed glimpse cut off at its first token.
"""

from __future__ import annotations

import asyncio

from glimprouter import RouterContext, graph, run_config
from glimprouter.graph.invoke import run_question
from tests.fakes import context_at, fake_model_server

QUESTION = "What is 2 + 2?"
ANSWER_TOKENS = 6


async def run(context: RouterContext) -> dict:
    return await asyncio.wait_for(
        run_question(graph, {"question": QUESTION}, context, run_config(context)), 120
    )


def completion_tokens(result: dict) -> dict[str, int]:
    return {role: counts["completion_tokens"] for role, counts in result["usage"].items()}


async def test_usage_counts_the_glimpses_cut_off_after_their_first_token():
    with fake_model_server() as server:
        result = await run(context_at(server.url))
    assert [step["model"] for step in result["steps"]] == ["small", "large", "large"]
    # Small: step 0 (4 tokens), then two glimpses of one token each before the large steps.
    assert completion_tokens(result) == {"small": 4 + 1 + 1, "large": 4 + 4 + ANSWER_TOKENS}
    assert result["usage"]["small"]["requests"] == 3 and result["usage"]["large"]["requests"] == 3
    assert len(server.requests) == 6


async def test_usage_counts_every_probe():
    with fake_model_server() as server:
        result = await run(context_at(server.url, glimpse_mode="probe"))
    # Three one-token probes and the small step 0.
    assert completion_tokens(result)["small"] == 3 + 4
    assert result["usage"]["small"]["requests"] == 4


async def test_a_chain_stops_where_its_tokens_run_out_and_still_answers():
    limit = 16 + 8  # the answer's 16 kept aside: 8 for the reasoning
    with fake_model_server() as server:
        result = await run(context_at(server.url, max_chain_tokens=limit))
    # Step 0 (4), a one-token glimpse, then the large step cut to the 3 tokens left.
    assert result["stop_reason"] == "max_chain_tokens"
    assert [(s["model"], s["completion_tokens"]) for s in result["steps"]] == [
        ("small", 4),
        ("large", 3),
    ]
    assert result["steps"][-1]["finish"] == "length"
    assert [r["max_completion_tokens"] for r in server.requests] == [8, 4, 3, 16]
    assert completion_tokens(result) == {"small": 4 + 1, "large": 3 + ANSWER_TOKENS}
    assert sum(completion_tokens(result).values()) <= limit
    assert result["answer"].startswith("The answer to")


async def test_a_judge_call_the_chain_cannot_afford_is_not_sent():
    with fake_model_server() as server:
        context = context_at(server.url, method="specreason", max_chain_tokens=16 + 4)
        result = await run(context)
    # The small draft took all 4 tokens left: no judge call, no rewrite, the draft dropped.
    assert result["stop_reason"] == "max_chain_tokens" and result["steps"] == []
    assert [r["max_completion_tokens"] for r in server.requests] == [4, 16]
    assert completion_tokens(result) == {"small": 4, "large": ANSWER_TOKENS}


async def test_usage_counts_a_stream_the_server_cut_off_and_its_retry():
    first_dropped = lambda index, request: "drop" if index == 0 else None  # noqa: E731
    with fake_model_server(fault=first_dropped) as server:
        result = await run(context_at(server.url, max_retries=1))
    assert result["stop_reason"] == "end_of_sequence"
    # Step 0's first stream died after one token; its retry wrote the step.
    assert completion_tokens(result)["small"] == 1 + 4 + 1 + 1
    assert result["usage"]["small"]["requests"] == 1 + 3
