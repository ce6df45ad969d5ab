"""Durable chains: a chain killed mid-way resumes from its last finished step (real vLLM)."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys

import pytest

from glimprouter import ConfigError
from glimprouter.graph.threads import DURABILITY, durable_graph, plan_thread, thread_config

pytestmark = pytest.mark.server

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
        async for event in durable.astream(
            {"question": QUESTION},
            context=context,
            config=config,
            stream_mode="custom",
            durability=DURABILITY,
        ):
            seen.append(event)
            if len(seen) == 2:
                break  # the caller walks away mid-chain, as a crashed notebook would
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
    ]


def test_cli_ask_killed_with_sigkill_resumes_under_its_thread_id(server_context, tmp_path):
    context = long_chain(server_context)
    db = tmp_path / "threads.sqlite"
    first = subprocess.Popen(
        ask_command(context, db, QUESTION),
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    printed = []
    assert first.stdout is not None
    for line in first.stdout:
        if match := STEP_LINE.match(line):
            printed.append((int(match[1]), match[2], int(match[3])))
            if len(printed) == 3:
                first.send_signal(signal.SIGKILL)  # after step 2 is shown, step 1 is saved
                break
    first.wait(timeout=60)
    assert len(printed) == 3, "the chain ended before it could be killed mid-way"

    resumed = subprocess.run(
        ask_command(context, db), capture_output=True, text=True, timeout=900, check=False
    )
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
