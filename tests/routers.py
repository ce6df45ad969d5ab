"""serve-router processes the tests start, the requests they send them, and the kill-and-resume
run the fake-server and real-vLLM tests share."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from glimprouter.prompts import STEP_SEPARATOR
from tests.processes import Lines, start, stop, wait_until
from tests.threads import saved_steps


def chat(thread_id: str | None = None, **fields) -> dict:
    body = {"model": "glimprouter", "messages": [{"role": "user", "content": "What is 2 + 2?"}]}
    return body | ({"thread_id": thread_id} if thread_id else {}) | fields


def start_router(
    url: str, database: str | None, token_budget: int = 160, *flags: str, **popen
) -> tuple[subprocess.Popen, str]:
    """A serve-router process (with `flags`, and --checkpoint-db `database` if given); its base
    URL once it is ready."""
    command = [sys.executable, "-m", "glimprouter.cli", "serve-router", "--port", "0",
               "--small-url", url, "--large-url", url, "--token-budget", str(token_budget),
               "--step-max-tokens", "16", "--answer-max-tokens", "16", "--max-retries", "0",
               *(["--checkpoint-db", database] if database else []), *flags]  # fmt: skip
    popen = {"stderr": subprocess.DEVNULL, **popen}
    process = start(command, stdout=subprocess.PIPE, text=True, **popen)
    try:
        ready = Lines(process.stdout).wait_for(
            lambda line: line if line.startswith("serving ") else None, 120, "the ready line"
        )
    except BaseException:
        stop(process)  # a router that never got ready is not left running
        raise
    return process, ready.split()[3]


def kill_a_router_mid_chain_and_resume(
    url: str, database: str, thread: str, token_budget: int
) -> None:
    """Router A starts the thread and is killed with SIGKILL once two steps are saved; router B,
    sharing the database, finishes it: the final chain keeps A's steps."""
    body = chat(thread, max_tokens=token_budget)
    router_a, url_a = start_router(url, database, token_budget)
    try:

        def send() -> None:
            with contextlib.suppress(httpx.HTTPError):  # its router is killed mid-chain
                httpx.post(f"{url_a}/chat/completions", json=body, timeout=600)

        threading.Thread(target=send, daemon=True).start()
        wait_until(lambda: len(saved_steps(database, thread)) >= 2, 600, "two saved steps")
        router_a.kill()
        router_a.wait()
    finally:
        stop(router_a)
    before = saved_steps(database, thread)
    router_b, url_b = start_router(url, database, token_budget)
    try:
        reply = httpx.post(f"{url_b}/chat/completions", json=body, timeout=600)
    finally:
        assert stop(router_b) == 0
    assert reply.status_code == 200, reply.text
    after = saved_steps(database, thread)
    assert len(before) >= 2 and after[: len(before)] == before
    reasoning = reply.json()["choices"][0]["message"]["reasoning_content"]
    assert reasoning.startswith(STEP_SEPARATOR.join(step["text"] for step in before))


FRESH_CONNECTION = {"Connection": "close"}  # each request is accepted anew, by either worker


def scrape(base_url: str) -> dict[tuple[str, tuple], float]:
    reply = httpx.get(base_url.removesuffix("/v1") + "/metrics", headers=FRESH_CONNECTION)
    assert reply.status_code == 200, reply.text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(reply.text)
        for sample in family.samples
    }


def total(samples: dict[tuple[str, tuple], float], name: str, **labels: str) -> float:
    """The sum of `name`'s samples that carry `labels`."""
    return sum(
        value
        for (sample, sample_labels), value in samples.items()
        if sample == name and set(labels.items()) <= set(sample_labels)
    )


def metrics_env(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    directory = tmp_path / "metrics"
    directory.mkdir()
    return directory, os.environ | {"PROMETHEUS_MULTIPROC_DIR": str(directory)}
