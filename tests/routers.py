"""serve-router processes the tests start, the requests they send them, and the kill-and-resume
run the fake-server and real-vLLM tests share."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
from prometheus_client.parser import text_string_to_metric_families

from glimprouter.prompts import STEP_SEPARATOR, THINK_CLOSE
from tests.fakes import chat
from tests.processes import Lines, running, start, stop, wait_until
from tests.proxy import KillableProxy
from tests.threads import saved_steps


def start_router(
    url: str, database: str | None, token_budget: int = 160, *flags: str, **popen
) -> tuple[subprocess.Popen, str]:
    """A serve-router process (with `flags`, and --checkpoint-db `database` if given); its base
    URL once it is ready."""
    command = [sys.executable, "-m", "glimprouter.cli", "serve-router", "--port", "0",
               "--small-url", url, "--large-url", url, "--token-budget", str(token_budget),
               "--step-max-tokens", "16", "--answer-max-tokens", "16", "--max-retries", "0",
               *(["--checkpoint-db", database] if database else []), *flags]  # fmt: skip
    return started_router(command, **popen)


def start_router_at_defaults(url: str, *flags: str, **popen) -> tuple[subprocess.Popen, str]:
    """A serve-router process at the default settings but `flags` and no retries, both models on
    `url`; its base URL once it is ready."""
    command = [sys.executable, "-m", "glimprouter.cli", "serve-router", "--port", "0",
               "--small-url", url, "--large-url", url, "--max-retries", "0", *flags]  # fmt: skip
    return started_router(command, **popen)


def started_router(command: list[str], **popen) -> tuple[subprocess.Popen, str]:
    """The serve-router `command` started; its base URL once it is ready."""
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


def one_reply(serve_router: list[str], question: str) -> tuple[str, httpx.Response, str]:
    """Start the `serve_router` command with its output captured, ask it `question` once and
    stop it: its ready line, the reply, and all it printed after the ready line."""
    output = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True}
    with running(serve_router, **output) as router:
        printed = Lines(router.stdout)
        banner = printed.wait_for(
            lambda line: line if line.startswith("serving ") else None, 120, "the ready line"
        )
        reply = httpx.post(f"{banner.split()[3]}/chat/completions", json=chat(question), timeout=60)
        stop(router)
        return banner, reply, printed.rest(60)


def steps_continued(request: dict[str, Any]) -> int | None:
    """How many steps the chain a model request continues holds; None for an answer request
    (its thinking closed)."""
    prefix = request["messages"][-1]["content"]
    return None if THINK_CLOSE in prefix else prefix.count(STEP_SEPARATOR)


def kill_a_router_mid_chain_and_resume(
    url: str, database: str, thread: str, token_budget: int
) -> None:
    """Router A starts the thread through a proxy that holds its first model request after a step
    is saved (the next step's or the answer's, whichever the model's chain asks for); A is killed
    with SIGKILL with that request in flight, the chain unfinished by construction. Router B,
    sharing the database, finishes it through a recording proxy: the final chain keeps A's steps,
    and none of B's requests starts the chain again (a restart would write the same steps on a
    deterministic model, so only B's own requests tell a resume from a restart)."""
    body = chat(thread_id=thread, max_tokens=token_budget)
    proxy_a = KillableProxy(urlparse(url).port)
    proxy_a.hold(lambda _, request: steps_continued(request) != 0)
    answered = threading.Event()

    def send() -> None:
        with contextlib.suppress(httpx.HTTPError):  # its router is killed mid-chain
            httpx.post(f"{url_a}/chat/completions", json=body, timeout=600)
        answered.set()

    def mid_chain() -> bool:
        assert not answered.is_set(), "router A ended the chain before it was killed: no resume"
        return proxy_a.held() > 0 and len(saved_steps(database, thread)) >= 1

    try:
        router_a, url_a = start_router(proxy_a.url, database, token_budget)
        try:
            threading.Thread(target=send, daemon=True).start()
            wait_until(mid_chain, 600, "router A asking for a model after a step was saved")
            router_a.kill()
            router_a.wait()
        finally:
            stop(router_a)
    finally:
        proxy_a.close()
    before = saved_steps(database, thread)
    assert before, "router A saved no step"
    proxy_b = KillableProxy(urlparse(url).port)
    try:
        router_b, url_b = start_router(proxy_b.url, database, token_budget)
        try:
            reply = httpx.post(f"{url_b}/chat/completions", json=body, timeout=600)
        finally:
            assert stop(router_b) == 0
        requests_b = proxy_b.chat_requests()
    finally:
        proxy_b.close()
    assert reply.status_code == 200, reply.text
    after = saved_steps(database, thread)
    assert after[: len(before)] == before, "router B kept the steps A saved"
    assert requests_b, "router B finished the chain with a model"
    continued = [steps_continued(request) for request in requests_b]
    assert all(steps is None or steps >= len(before) for steps in continued), continued
    reasoning = reply.json()["choices"][0]["message"]["reasoning_content"]
    assert reasoning.startswith(STEP_SEPARATOR.join(step["text"] for step in before))


FRESH_CONNECTION = {"Connection": "close"}  # each request is accepted anew, by either worker


def scrape(base_url: str) -> dict[tuple[str, tuple], float]:
    """Every sample of a router's /metrics, by (name, sorted labels)."""
    reply = httpx.get(base_url.removesuffix("/v1") + "/metrics", headers=FRESH_CONNECTION)
    return samples(reply)


def samples(reply: httpx.Response) -> dict[tuple[str, tuple], float]:
    """Every sample of a /metrics reply, by (name, sorted labels)."""
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
