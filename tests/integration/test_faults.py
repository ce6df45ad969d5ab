"""Server faults and malformed replies: a run ends with a named stop reason and keeps its trace,
never a crash deep inside a node; an eval goes on and a rerun retries only what failed."""

from __future__ import annotations

import asyncio
from contextlib import aclosing
from typing import Any

import pytest

from glimprouter import RouterContext, graph, run_config
from glimprouter.evals.results import read_results
from glimprouter.evals.runner import run_eval
from glimprouter.graph.invoke import run_question
from glimprouter.graph.threads import DURABILITY, durable_graph, plan_thread, thread_config
from tests.fakes import context_at, fake_model_server, problem
from tests.threads import streamed_events

QUESTION = "What is 2 + 2?"
GUARD_S = 120  # a hung run fails the test instead of hanging the suite


async def run(context: RouterContext, runnable=graph, config=None, run_input=None):
    return await asyncio.wait_for(
        run_question(
            runnable,
            run_input if run_input is not None else {"question": QUESTION},
            context,
            config or run_config(context),
        ),
        GUARD_S,
    )


def after_first_step(action: Any):
    """A fault that lets the first step through, then answers `action` to every request."""
    return lambda index, request: action if index >= 1 else None


async def test_a_healthy_fake_run_for_reference():
    with fake_model_server() as server:
        result = await run(context_at(server.url))
    assert result["stop_reason"] == "end_of_sequence" and result["error"] is None
    assert [step["model"] for step in result["steps"]] == ["small", "large", "large"]
    assert len(server.requests) == 6  # 3 glimpsed steps, 2 large rewrites, the answer


async def test_500s_for_a_while_are_retried_and_the_run_completes():
    with fake_model_server(fault=lambda index, _: "500" if index in (1, 2) else None) as server:
        result = await run(context_at(server.url, max_retries=2))
    assert result["stop_reason"] == "end_of_sequence" and result["error"] is None
    assert len(server.requests) == 6 + 2


@pytest.mark.parametrize(("fault", "needle"), [("500", "failed"), ("drop", "cut off 2 streamed")])
async def test_a_server_that_keeps_failing_ends_the_run_keeping_its_steps(fault, needle):
    with fake_model_server(fault=after_first_step(fault)) as server:
        # Every step kept by the small model: its stream is where a dying server cuts in.
        result = await run(context_at(server.url, max_retries=1, threshold=100.0))
    assert result["stop_reason"] == "endpoint_error"
    assert f"the small model server at {server.url}" in result["error"]
    assert needle in result["error"]
    assert [step["text"] for step in result["steps"]] == [result["steps"][0]["text"]]
    assert result["usage"]["small"]["requests"] == 1
    assert len(server.requests) <= 1 + 2  # one try and one retry: bounded


# Faults from the first request on: no healthy reply has to fit within the short timeout.
async def test_a_hanging_server_is_given_up_on_after_the_timeout():
    with fake_model_server(fault=lambda index, request: "hang") as server:
        result = await run(context_at(server.url, request_timeout=1, max_retries=1))
    assert result["stop_reason"] == "endpoint_error"
    assert "did not answer within 1 s" in result["error"]
    assert "GLIMPROUTER_REQUEST_TIMEOUT" in result["error"]
    assert result["steps"] == []
    assert len(server.requests) == 2  # one try and one retry


async def test_a_stream_that_stalls_mid_step_is_given_up_on_after_the_timeout():
    with fake_model_server(fault=lambda index, request: "stall") as server:
        context = context_at(server.url, request_timeout=1, max_retries=0, threshold=100.0)
        result = await run(context)
    assert result["stop_reason"] == "endpoint_error"
    assert "did not answer within 1 s" in result["error"]
    assert result["steps"] == []


async def test_with_a_checkpointer_the_run_resumes_once_the_server_is_back(tmp_path):
    # Requests: 0 small step 0, 1 small glimpse of step 1 (cut), 2 large step 1: fails.
    with fake_model_server(fault=lambda index, _: "500" if index >= 2 else None) as server:
        context = context_at(server.url, max_retries=0)
        config = thread_config(context, "flaky")
        async with durable_graph(tmp_path / "threads.sqlite") as durable:
            failed = await run(context, durable, config, {"question": QUESTION})
            assert failed["stop_reason"] == "endpoint_error" and len(failed["steps"]) == 1
            server.fault = None  # the server is back
            before = len(server.requests)
            resumed = await asyncio.wait_for(
                run_question(durable, None, context, config, durability=DURABILITY), GUARD_S
            )
    assert resumed["stop_reason"] == "end_of_sequence" and resumed["error"] is None
    assert resumed["steps"][0] == failed["steps"][0]
    assert [step["model"] for step in resumed["steps"]] == ["small", "large", "large"]
    # Only the failed step and what follows it: large step 1, glimpse + large step 2, answer.
    assert len(server.requests) - before == 4


async def test_an_eval_goes_on_past_a_failing_problem_and_a_rerun_retries_only_it(tmp_path):
    def poison(_, request):
        chain = request["messages"][-1]["content"]
        return "500" if "poison" in request["messages"][0]["content"] and "\n\n" in chain else None

    problems = [problem("one"), problem("poison"), problem("three")]
    with fake_model_server(fault=poison) as server:
        context = context_at(server.url, max_retries=0)
        tally = await run_eval(problems, context, tmp_path, dataset="faults", concurrency=3)
        assert (tally.done, tally.failed) == (3, 1)
        records = {r["problem_id"]: r for r in read_results(tmp_path)}
        assert records["poison"]["stop_reason"] == "endpoint_error"
        assert (
            len(records["poison"]["trace"]) == 1
            and "small model server" in records["poison"]["error"]
        )
        assert not records["one"].get("error") and not records["three"].get("error")

        server.fault = None
        before = len(server.requests)
        tally = await run_eval(problems, context, tmp_path, dataset="faults", concurrency=3)
    assert (tally.done, tally.failed) == (1, 0)
    rerun = server.requests[before:]
    assert rerun and all("poison" in request["messages"][0]["content"] for request in rerun)


@pytest.mark.parametrize(
    ("reply", "stop_reason", "needle"),
    [
        ({"top_logprob": float("nan")}, "endpoint_error", "returned no usable logprobs"),
        ({"candidates": 0}, "endpoint_error", "returned no usable logprobs"),
        ({"finish_reason": "abort"}, "endpoint_error", "gave up on a request"),
        ({"content": ""}, "end_of_sequence", None),
        ({"candidates": 1}, "end_of_sequence", None),
        ({"finish_reason": "content_filter"}, "end_of_sequence", None),
    ],
)
@pytest.mark.parametrize("glimpse_mode", ["stream", "probe"])
async def test_malformed_replies_follow_their_rule(reply, stop_reason, needle, glimpse_mode):
    with fake_model_server(fault=lambda *_: reply) as server:
        result = await run(context_at(server.url, glimpse_mode=glimpse_mode))
    assert result["stop_reason"] == stop_reason
    if needle:
        assert needle in result["error"]
    else:
        assert result["error"] is None and result["steps"]


async def test_a_run_stopped_mid_step_leaves_an_unfinished_thread_that_resumes(tmp_path):
    # Stopping a run (Ctrl-C in a notebook, SIGTERM, a caller walking away) cancels the step in
    # flight: LangGraph saves it as a failed task with nothing next, which is not a finished
    # chain.
    with fake_model_server() as server:
        context = context_at(server.url)
        config = thread_config(context, "stopped")
        async with durable_graph(tmp_path / "threads.sqlite") as durable:
            events = streamed_events(durable, QUESTION, context, config)
            async with aclosing(events):
                first = await anext(events)
            plan = await plan_thread(durable, "stopped", None, "math")
            assert (plan.state, plan.steps_done) == ("unfinished", 1)
            resumed = await asyncio.wait_for(
                run_question(durable, None, context, config, durability=DURABILITY), GUARD_S
            )
    assert resumed["steps"][0]["text"] == first["text"]
    assert resumed["stop_reason"] == "end_of_sequence" and len(resumed["steps"]) == 3
