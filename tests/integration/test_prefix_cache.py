"""Prefix caching, fast: the cached-token counts a server reports, where they are recorded, and
warming the idle large model's cache against two fake model servers (one per role).

Under the default threshold the fake's chain is [small, large, large] (see tests/fakes.py): one
small step, then the large model takes over, the case warming is for.
"""

from __future__ import annotations

import asyncio
import threading

import pytest

from glimprouter import RouterContext, graph, run_config
from glimprouter.errors import ConfigError
from glimprouter.evals.report import cache_hit_rate, markdown, summarise
from glimprouter.graph.invoke import run_question
from glimprouter.graph.settings import on_off
from glimprouter.model_servers.client import cached_tokens_of, one_request
from glimprouter.nodes.warming import (
    WARM_EVERY_TOKENS,
    large_holds,
    needs_warming,
    warming_pays,
)
from glimprouter.prompts import next_step_messages
from tests.fakes import context_at, fake_model_server
from tests.processes import wait_until

QUESTION = "What is 2 + 2?"


def is_warming(request: dict) -> bool:
    """A warming request: one greedy token, no logprobs, not streamed."""
    return (
        request.get("max_completion_tokens") == 1
        and not request.get("logprobs")
        and not request.get("stream")
    )


async def run(context: RouterContext) -> dict:
    return await asyncio.wait_for(
        run_question(graph, {"question": QUESTION}, context, run_config(context)), 60
    )


def two_servers_context(small, large, **overrides) -> RouterContext:
    return context_at(small.url, large_base_url=large.url, **overrides)


def chain_of(result: dict) -> list:
    return [(s["model"], s["text"]) for s in result["steps"]] + [result["answer"]]


def step(index: int, model: str) -> dict:
    return {"index": index, "model": model}


# --- what the server reports ------------------------------------------------------------------


def test_cached_tokens_are_read_from_the_usage_langchain_maps_them_to():
    assert cached_tokens_of({"input_tokens": 90, "input_token_details": {"cache_read": 64}}) == 64
    assert cached_tokens_of({"input_tokens": 90, "input_token_details": {"cache_read": 0}}) == 0
    # A server started without --enable-prompt-tokens-details, or a stream closed early.
    assert cached_tokens_of({"input_tokens": 90, "input_token_details": {}}) is None
    assert cached_tokens_of({"input_tokens": 90}) is None
    assert cached_tokens_of(None) is None


def test_usage_counts_cached_tokens_only_where_the_server_reported_them():
    reported = one_request("small", 90, 4, 64)["small"]
    assert reported["cached_prompt_tokens"] == 64 and reported["counted_prompt_tokens"] == 90
    cut_glimpse = one_request("small", 90, 4)["small"]
    assert "cached_prompt_tokens" not in cut_glimpse and "counted_prompt_tokens" not in cut_glimpse


def test_report_shows_each_models_hit_rate_over_the_records_that_count_it():
    base = {
        "problem_id": "p",
        "repeat": 0,
        "correct": True,
        "latency_s": 1.0,
        "steps": 2,
        "large_steps": 1,
        "small_completion_tokens": 10,
        "large_completion_tokens": 10,
        "small_requests": 2,
        "large_requests": 2,
    }
    records = [
        {**base, "small_prompt_tokens": 100, "small_cached_prompt_tokens": 90,
         "large_prompt_tokens": 200, "large_cached_prompt_tokens": 150},
        # 60 prompt tokens of a glimpse the server did not count: neither hits nor misses.
        {**base, "problem_id": "q", "small_prompt_tokens": 160, "small_cached_prompt_tokens": 70,
         "small_counted_prompt_tokens": 100, "large_prompt_tokens": 0},
        # Recorded before the counts were: left out rather than counted as misses.
        {**base, "problem_id": "r", "small_prompt_tokens": 500, "large_prompt_tokens": 500},
    ]  # fmt: skip
    assert cache_hit_rate(records, "small") == pytest.approx(0.8)
    assert cache_hit_rate(records, "large") == pytest.approx(0.75)
    assert cache_hit_rate(records[2:], "small") is None
    row = summarise({"dataset": "d", "method": "glimprouter", "threshold": 1.0}, records)
    assert "| 80% / 75% |" in markdown([row])
    old = summarise({"dataset": "d", "method": "glimprouter", "threshold": 1.0}, records[2:])
    assert "| – / – |" in markdown([old])


# --- the warming setting ----------------------------------------------------------------------


def test_warming_is_on_by_default_and_read_as_words_from_the_environment(monkeypatch):
    assert RouterContext().warm_prefix_cache is True
    monkeypatch.setenv("GLIMPROUTER_WARM_PREFIX_CACHE", "off")
    assert RouterContext().warm_prefix_cache is False
    monkeypatch.setenv("GLIMPROUTER_WARM_PREFIX_CACHE", "maybe")
    with pytest.raises(ConfigError, match="GLIMPROUTER_WARM_PREFIX_CACHE='maybe'"):
        RouterContext()
    assert on_off("Yes") is True and on_off("0") is False


# --- when warming pays (pure) -----------------------------------------------------------------


def test_the_large_server_holds_the_chain_through_its_own_last_step_or_the_last_warming():
    chain = [step(0, "small"), step(1, "large"), step(2, "small")]
    assert large_holds(chain, warmed=None) == 2
    assert large_holds(chain, warmed=3) == 3
    assert large_holds(chain[:1], warmed=0) == 0  # the prompt, warmed before step 0
    assert large_holds(chain[:1], warmed=None) == -1  # not even the prompt


def test_warming_goes_out_as_a_small_step_starts_on_a_prefix_the_large_server_lacks():
    small_then_large = [step(0, "small"), step(1, "large")]
    assert needs_warming([], None, pays=True)  # the prompt, before the first step
    assert needs_warming([step(0, "small")], 0, pays=True)
    # The large model wrote the last step: its server has the chain already.
    assert not needs_warming(small_then_large, None, pays=True)
    # That prefix was sent already.
    assert not needs_warming([step(0, "small")], 1, pays=True)
    # The large model is never asked.
    assert not needs_warming([step(0, "small")], 0, pays=False)


def test_warming_pays_only_for_a_model_with_a_server_of_its_own_that_may_write():
    apart = {"small_base_url": "http://a:1/v1", "large_base_url": "http://b:2/v1"}
    for role in ("small", "large"):
        assert warming_pays(RouterContext(**apart), role)
        assert not warming_pays(RouterContext(**apart, warm_prefix_cache=False), role)
    assert warming_pays(RouterContext(**apart, method="small-only"), "large")  # it answers
    assert not warming_pays(
        RouterContext(**apart, method="small-only", answer_model="small"), "large"
    )
    assert warming_pays(RouterContext(**apart, method="large-only", answer_model="small"), "small")
    assert not warming_pays(RouterContext(**apart, method="large-only"), "small")
    # One server under two names: one prefix cache, which the writing model's requests fill.
    shared = {"small_base_url": "http://a:1/v1", "large_base_url": "http://a:1/v1/"}
    assert not warming_pays(RouterContext(**shared), "large")
    assert not warming_pays(RouterContext(**shared), "small")


# --- against fake servers ---------------------------------------------------------------------


@pytest.mark.parametrize("glimpse_mode", ["stream", "probe"])
async def test_the_large_model_is_warmed_as_each_small_step_starts(glimpse_mode):
    """Each small step holds its stream after its first token until the large model's server
    has the chain before that step: warming goes out as a step starts, not once it has ended."""
    warmed = [threading.Event() for _ in range(3)]
    held: list[bool] = []

    def steps_in(request) -> int:
        return prefix_of(request).removeprefix("<think>\n").count("\n\n")

    def small_fault(index, request):
        if request.get("stream"):  # writes step k (stream mode: its glimpse too)
            event = warmed[steps_in(request)]
            return {"after_first_token": lambda: held.append(event.wait(10))}
        return None

    def large_fault(index, request):
        if is_warming(request):
            warmed[steps_in(request)].set()

    with (
        fake_model_server(fault=small_fault) as small,
        fake_model_server(fault=large_fault) as large,
    ):
        context = two_servers_context(small, large, glimpse_mode=glimpse_mode, threshold=100.0)
        result = await run(context)
    assert [s["model"] for s in result["steps"]] == ["small", "small", "small"]
    assert held == [True, True, True]  # no step waited in vain
    warming = [r for r in large.requests if is_warming(r)]
    texts = [s["text"] for s in result["steps"]]
    assert [r["messages"] for r in warming] == [
        next_step_messages(question=QUESTION, step_texts=texts[:k]) for k in range(3)
    ]
    assert not any(is_warming(r) for r in small.requests)  # never to the model that writes
    assert all("seed" not in r and r["temperature"] == 0.0 for r in warming)
    # Kept out of the chain's usage: it decides nothing and spends no budget.
    assert result["usage"]["large"]["requests"] == 1  # the answer


async def test_the_large_model_gets_the_prompt_as_the_chain_starts_in_case_it_takes_step_0():
    """The first glimpse is held until the large model's server has the prompt: it is warmed
    while the small model glimpses, whoever takes the step."""
    held: list[bool] = []
    prompt_warmed = threading.Event()

    def hold_first_glimpse(index, request):
        if index == 0:
            held.append(prompt_warmed.wait(10))

    def note_warming(index, request):
        if is_warming(request):
            prompt_warmed.set()

    with (
        fake_model_server(fault=hold_first_glimpse) as small,
        fake_model_server(fault=note_warming) as large,
    ):
        result = await run(two_servers_context(small, large, threshold=0.0))
    assert [s["model"] for s in result["steps"]] == ["large", "large", "large"]
    assert held == [True]
    (warming,) = [r for r in large.requests if is_warming(r)]
    assert prefix_of(warming) == "<think>\n"
    step_0 = next(r for r in large.requests if not is_warming(r))
    assert step_0["messages"] == warming["messages"]


# A first step long enough to warm the large model twice as the small model streams it.
LONG_STEP = " ".join(f"w{n}" for n in range(2 * WARM_EVERY_TOKENS + 8)) + "\n\n"


def long_first_step(index, request):
    if request.get("stream") and request["messages"][-1]["content"] == "<think>\n":
        return {"content": LONG_STEP}
    return None


def prefix_of(request: dict) -> str:
    return request["messages"][-1]["content"]


async def test_the_large_model_is_warmed_as_a_streamed_small_step_grows():
    with (
        fake_model_server(fault=long_first_step) as small,
        fake_model_server() as large,
    ):
        result = await run(two_servers_context(small, large, step_max_tokens=96, token_budget=256))
    assert [s["model"] for s in result["steps"]] == ["small", "large", "large"]
    assert result["steps"][0]["text"] == LONG_STEP.removesuffix("\n\n")
    warming = [r for r in large.requests if is_warming(r)]
    # The prompt as the step starts, then the step so far at each WARM_EVERY_TOKENS of it (the
    # step at 32 tokens only if the prompt's request had ended when it got there: see below).
    words = LONG_STEP.split(" ")
    grown = [next_step_messages(question=QUESTION, step_texts=[])] + [
        next_step_messages(question=QUESTION, step_texts=[], step_begun=" ".join(words[:n]) + " ")
        for n in (WARM_EVERY_TOKENS, 2 * WARM_EVERY_TOKENS)
    ]
    sent = [r["messages"] for r in warming]
    assert sent in (grown, [grown[0], grown[2]])
    step_1 = next(prefix_of(r) for r in large.requests if not is_warming(r))
    assert all(step_1.startswith(prefix_of(request)) for request in warming)
    assert not any(is_warming(r) for r in small.requests)


async def test_a_newer_prefix_waits_for_the_warming_in_flight_and_replaces_an_older_one():
    """The prompt's warming is held by the server while the step streams past both of its
    warming points: the step's second prefix replaces its first, and goes out once the prompt's
    request ends (the large step's arrival releases it, and waits for it)."""
    release, second_sent = threading.Event(), threading.Event()

    def large_fault(index, request):
        if is_warming(request):
            if index == 0:
                release.wait(10)
            else:
                second_sent.set()
        else:
            release.set()
            second_sent.wait(10)

    with (
        fake_model_server(fault=long_first_step) as small,
        fake_model_server(fault=large_fault) as large,
    ):
        result = await run(two_servers_context(small, large, step_max_tokens=96, token_budget=256))
    assert result["stop_reason"] == "end_of_sequence" and second_sent.is_set()
    warming = [prefix_of(r) for r in large.requests if is_warming(r)]
    assert len(warming) == 2 and warming[0] == "<think>\n"
    assert warming[1].endswith(" ".join(LONG_STEP.split(" ")[: 2 * WARM_EVERY_TOKENS]) + " ")
    assert large.closed == []  # nothing cancelled


async def test_nothing_is_warmed_with_a_steps_last_token():
    """A step cut at 2 * WARM_EVERY_TOKENS tokens, its finish reason on its last token (as vLLM
    streams it): no warming with that token, which the large step right after would race."""

    def cut_first_step(index, request):
        if (overrides := long_first_step(index, request)) is not None:
            return {**overrides, "finish_on_last_token": True}
        return None

    with fake_model_server(fault=cut_first_step) as small, fake_model_server() as large:
        context = two_servers_context(
            small, large, step_max_tokens=2 * WARM_EVERY_TOKENS, token_budget=256
        )
        result = await run(context)
    assert result["steps"][0]["completion_tokens"] == 2 * WARM_EVERY_TOKENS
    assert result["steps"][0]["finish"] == "length"
    warming = [prefix_of(r) for r in large.requests if is_warming(r)]
    last_token = f" w{2 * WARM_EVERY_TOKENS - 1} "
    assert warming[0] == "<think>\n" and not any(p.endswith(last_token) for p in warming)


async def test_the_small_model_is_warmed_as_a_large_step_grows():
    def long_large_step(index, request):
        writes_step_1 = request.get("stream") and prefix_of(request).count("\n\n") == 1
        return {"content": LONG_STEP} if writes_step_1 else None

    with (
        fake_model_server() as small,
        fake_model_server(fault=long_large_step) as large,
    ):
        result = await run(two_servers_context(small, large, step_max_tokens=96, token_budget=256))
    steps = result["steps"]
    assert [s["model"] for s in steps] == ["small", "large", "large"]
    assert steps[1]["text"] == LONG_STEP.removesuffix("\n\n")
    warming = [prefix_of(r) for r in small.requests if is_warming(r)]
    chain_before = next_step_messages(question=QUESTION, step_texts=[steps[0]["text"]])
    begun = [prefix.removeprefix(chain_before[-1]["content"]) for prefix in warming]
    # Sent while the large model wrote step 1: at 32 tokens of it (unless still in flight when
    # it got to 64, see above), at 64; none once it had ended.
    assert begun[-1] == " ".join(LONG_STEP.split(" ")[: 2 * WARM_EVERY_TOKENS]) + " "
    assert all(steps[1]["text"].startswith(text) and text for text in begun)
    # The next glimpse continues what was warmed; the large model got only its own warming.
    glimpse_2 = next(r for r in small.requests if prefix_of(r).count("\n\n") == 2)
    assert all(prefix_of(glimpse_2).startswith(prefix) for prefix in warming)
    assert [prefix_of(r) for r in large.requests if is_warming(r)] == ["<think>\n"]


async def test_warming_changes_nothing_in_the_chain():
    with fake_model_server() as small, fake_model_server() as large:
        warmed = await run(two_servers_context(small, large))
        cold = await run(two_servers_context(small, large, warm_prefix_cache=False))
    assert chain_of(warmed) == chain_of(cold)
    assert warmed["usage"] == cold["usage"]
    assert sum(map(is_warming, large.requests)) == 1  # from the warmed run only


async def test_a_failing_warming_request_never_fails_the_chain():
    def large_fault(index, request):
        return "500" if is_warming(request) else None

    with fake_model_server() as small, fake_model_server(fault=large_fault) as large:
        result = await run(two_servers_context(small, large))
        cold = await run(two_servers_context(small, large, warm_prefix_cache=False))
    assert result["stop_reason"] == cold["stop_reason"] and not result.get("error")
    assert chain_of(result) == chain_of(cold)
    assert sum(map(is_warming, large.requests)) == 1  # tried once, never retried


async def test_the_chain_end_cancels_a_warming_request_still_in_flight():
    def large_fault(index, request):
        return "until_closed" if is_warming(request) else None

    with fake_model_server() as small, fake_model_server(fault=large_fault) as large:
        result = await run(two_servers_context(small, large))
        assert result["answer"]
        (warming,) = [index for index, r in enumerate(large.requests) if is_warming(r)]
        wait_until(lambda: warming in large.closed, 10, "the warming request closed")


async def test_no_warming_when_off_or_when_both_roles_share_one_server():
    with fake_model_server() as small, fake_model_server() as large:
        await run(two_servers_context(small, large, warm_prefix_cache=False))
        assert not any(map(is_warming, large.requests))
    with fake_model_server() as server:
        await run(context_at(server.url))
        assert not any(map(is_warming, server.requests))
