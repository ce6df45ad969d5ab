"""Durable chains: a chain killed mid-way resumes from its last finished step (real vLLM)."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
from contextlib import aclosing
from urllib.parse import urlparse

import pytest

from glimprouter import ConfigError
from glimprouter.graph.threads import durable_graph, plan_thread, thread_config
from tests.processes import Lines, running, wait_until
from tests.proxy import KillableProxy
from tests.threads import streamed_events

pytestmark = pytest.mark.vllm

QUESTION = "List the first ten prime numbers and add them up, one step at a time."
STEP_LINE = re.compile(r"^step\s+(\d+)\s+(small|large)\s+H=\S+.*?(\d+) tok")


def long_chain(context):
    """Short steps and room for many of them, so a chain can be cut in the middle."""
    return dataclasses.replace(
        context, step_max_tokens=12, token_budget=120, answer_max_tokens=16, threshold=0.9
    )


async def test_a_chain_stopped_mid_way_resumes_from_its_last_step(server_context, tmp_path):
    context = long_chain(server_context)
    config = thread_config(context, "python-thread")
    async with durable_graph(tmp_path / "threads.sqlite") as durable:
        seen = []
        events = streamed_events(durable, QUESTION, context, config)
        async with aclosing(events):  # the run stops here, not whenever the stream is collected
            async for event in events:
                seen.append(event)
                if len(seen) == 2:
                    break  # the caller walks away mid-chain, as a crashed notebook would
        assert [event["event"] for event in seen] == ["step", "step"], "the chain ended early"
        plan = await plan_thread(durable, "python-thread", None, "math")
        assert plan.state == "unfinished" and plan.steps_done >= 1
        result = await durable.ainvoke(None, context=context, config=config)
    saved = [step["text"] for step in result["steps"][: plan.steps_done]]
    assert saved == [event["text"] for event in seen[: plan.steps_done]]
    assert [step["index"] for step in result["steps"]] == list(range(len(result["steps"])))
    assert result["stop_reason"] and result["answer"] is not None

    async with durable_graph(tmp_path / "threads.sqlite") as durable:
        assert (await plan_thread(durable, "python-thread", QUESTION, "math")).state == "finished"
        with pytest.raises(ConfigError, match="holds another question"):
            await plan_thread(durable, "python-thread", "What is 2 + 2?", "math")


def ask_command(context, db, *args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "glimprouter.cli",
        "ask",
        *args,
        "--thread-id",
        "cli-thread",
        "--checkpoint-db",
        str(db),
        "--small-url",
        context.small_base_url,
        "--large-url",
        context.large_base_url,
        "--threshold",
        str(context.threshold),
        "--step-max-tokens",
        str(context.step_max_tokens),
        "--token-budget",
        str(context.token_budget),
        "--answer-max-tokens",
        str(context.answer_max_tokens),
        "--seed",
        str(context.seed),
    ]


def test_cli_ask_killed_with_sigkill_resumes_under_its_thread_id(
    server_context, tmp_path, vllm_base_url
):
    proxy = KillableProxy(urlparse(vllm_base_url).port)
    # At most two requests per step (a glimpse, then the large model's step): after six, three
    # steps are written, and the chain cannot go on past them however fast the model is.
    proxy.hold(lambda number, body: number > 6)
    context = dataclasses.replace(
        long_chain(server_context), small_base_url=proxy.url, large_base_url=proxy.url
    )
    db = tmp_path / "threads.sqlite"
    try:
        with running(
            ask_command(context, db, QUESTION),
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "COLUMNS": "200"},
        ) as first:
            printed: list[tuple[int, str, int]] = []

            def step_line(line: str) -> bool:
                if match := STEP_LINE.match(line):
                    printed.append((int(match[1]), match[2], int(match[3])))
                return len(printed) == 3

            Lines(first.stdout).wait_for(step_line, 600, "three printed steps")
            wait_until(
                lambda: proxy.held() or first.poll() is not None, 600, "the chain's next request"
            )
            assert proxy.held(), "the chain ended before it could be killed mid-way"
            first.send_signal(signal.SIGKILL)  # the chain waits in the proxy: mid-way
            first.wait(timeout=60)
        proxy.release()

        resumed = subprocess.run(
            ask_command(context, db), capture_output=True, text=True, timeout=900, check=False
        )
    finally:
        proxy.close()
    assert resumed.returncode == 0, resumed.stderr
    done = int(re.search(r"resuming thread cli-thread after (\d+) saved steps", resumed.stdout)[1])
    assert done >= 2

    finished = subprocess.run(
        ask_command(context, db, "--json"), capture_output=True, text=True, timeout=60, check=False
    )
    assert finished.returncode == 0, finished.stderr
    result = json.loads(finished.stdout)
    kept = [(s["index"], s["model"], s["completion_tokens"]) for s in result["steps"]]
    assert kept[:2] == printed[:2]
    assert len(kept) > done and result["stop_reason"]
