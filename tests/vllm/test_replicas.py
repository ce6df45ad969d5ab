"""Two real vLLM replicas (SmolLM2-135M, started by `glimprouter serve --replicas 2`), each
behind a recording, killable proxy: chains stay on their replica and split evenly; a replica
killed mid-run hands its chains to the other with nothing lost; both dead is one line."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from urllib.parse import urlparse

import pytest

from glimprouter import RouterContext, graph, run_config
from glimprouter.evals.datasets import Problem
from glimprouter.evals.results import read_results
from glimprouter.evals.runner import run_eval
from glimprouter.graph.invoke import run_question
from glimprouter.prompts import render_question
from glimprouter.vllm_launcher.local_models import prepare
from tests.conftest import SERVE_TIMEOUT_S
from tests.processes import Lines, start, stop
from tests.proxy import KillableProxy

pytestmark = pytest.mark.vllm

CHAINS = 16
GUARD_S = 900  # a hung run fails the test instead of hanging the suite


def _ports_free(*ports: int) -> bool:
    for port in ports:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return False
    return True


def _free_port_pair() -> int:
    """A port P with P and P + 10 (serve's second replica) both free."""
    for _ in range(100):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port + 10 < 65536 and _ports_free(port, port + 10):
            return port
    raise AssertionError("no free pair of ports P, P + 10")


@pytest.fixture(scope="module")
def replica_urls() -> Iterator[list[str]]:
    """The base URLs of two replicas of SmolLM2 served as "small" and "large"."""
    serve = start(
        [
            *(sys.executable, "-m", "glimprouter.cli", "serve"),
            *("--model", str(prepare("smollm2-135m"))),
            *("--replicas", "2", "--small-port", str(_free_port_pair())),
        ],
        ignore_sigint=True,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert serve.stdout is not None
        urls = Lines(serve.stdout).wait_for(
            lambda line: line.split()[1] if line.startswith("large:") else None,
            SERVE_TIMEOUT_S,
            "'large:' endpoints from glimprouter serve --replicas 2",
        )
        yield urls.split(",")
    finally:
        serve.send_signal(signal.SIGTERM)
        try:
            serve.wait(timeout=120)
        finally:
            stop(serve)


@pytest.fixture
def proxies(replica_urls) -> Iterator[list[KillableProxy]]:
    started = [KillableProxy(urlparse(url).port) for url in replica_urls]
    yield started
    for proxy in started:
        proxy.close()


def context_on(proxies: list[KillableProxy], **overrides) -> RouterContext:
    urls = [proxy.url for proxy in proxies]
    settings = {
        "small_base_url": urls,
        "large_base_url": urls,
        "step_max_tokens": 12,
        "token_budget": 36,
        "answer_max_tokens": 12,
        "request_timeout": 300,
        "max_retries": 1,
        "replica_cooldown": 600.0,  # a killed replica stays set aside for the whole test
    }
    return RouterContext(**{**settings, **overrides})


def question(n: int) -> str:
    return f"Question {n:02d}: what is {n} + 7?"


async def run_chains(context: RouterContext, on_event=None) -> list[dict]:
    """CHAINS chains at once, in threads chain-00 ... chain-15 (their ids: fixed, so the split
    between the replicas is the same every run)."""

    async def one(n: int) -> dict:
        config = run_config(context, configurable={"thread_id": f"chain-{n:02d}"})
        events = on_event(n) if on_event else None
        run = run_question(graph, {"question": question(n)}, context, config, on_event=events)
        return await asyncio.wait_for(run, GUARD_S)

    return await asyncio.gather(*(one(n) for n in range(CHAINS)))


def replicas_of_each_chain(proxies: list[KillableProxy]) -> dict[tuple[int, str], set[int]]:
    """(chain, model) -> the replicas that received its requests."""
    numbers = {render_question(question(n)): n for n in range(CHAINS)}
    seen: dict[tuple[int, str], set[int]] = {}
    for index, proxy in enumerate(proxies):
        for body in proxy.chat_requests():
            chain = numbers[body["messages"][0]["content"]]
            seen.setdefault((chain, body["model"]), set()).add(index)
    return seen


async def test_16_concurrent_chains_each_stay_on_one_replica_and_split_evenly(proxies):
    results = await run_chains(context_on(proxies))
    assert all(r["error"] is None and r["steps"] for r in results), [r["error"] for r in results]
    seen = replicas_of_each_chain(proxies)
    assert {chain for chain, _ in seen} == set(range(CHAINS))
    assert all(len(replicas) == 1 for replicas in seen.values()), seen
    split = Counter(next(iter(seen[(n, "small")])) for n in range(CHAINS))
    print(f"chains per replica: {dict(split)}")
    assert 4 <= split[0] <= 12 and split[0] + split[1] == CHAINS  # the documented balance
    for n, result in enumerate(results):
        (replica,) = seen[(n, "small")]
        small_steps = [s for s in result["steps"] if s["model"] == "small"]
        assert all(s["replica"] == proxies[replica].url for s in small_steps)


async def test_a_replica_killed_mid_run_hands_its_chains_over_with_nothing_lost(proxies):
    doomed = proxies[0]
    # Every step streamed by the small model; the 12th request through replica 0 dies after
    # its first events, mid-step, and the proxy with it (the replica is gone for good).
    doomed.cut_response(request_number=12, after_events=2)
    written: dict[int, list[dict]] = {n: [] for n in range(CHAINS)}

    def record(n: int):
        return lambda event: written[n].append(event) if event["event"] == "step" else None

    results = await run_chains(context_on(proxies, threshold=100.0), record)
    assert doomed.died.is_set(), "the replica was never killed: the chains ended first"
    assert all(r["error"] is None for r in results), [r["error"] for r in results]
    assert all(r["stop_reason"] != "endpoint_error" and r["answer"] for r in results)
    handed_over = 0
    for n, result in enumerate(results):
        # The steps as each was written, in order, are the chain's steps: none lost, none
        # replaced, none twice.
        steps = [{k: v for k, v in event.items() if k != "event"} for event in written[n]]
        assert result["steps"] == steps
        assert [s["index"] for s in steps] == list(range(len(steps)))
        replicas = [s["replica"] for s in steps]
        if doomed.url in replicas and replicas[-1] != doomed.url:
            handed_over += 1
            first_moved = replicas.index(proxies[1].url)
            assert set(replicas[first_moved:]) == {proxies[1].url}  # and never back
    assert handed_over, "no chain had written a step on the killed replica before it died"
    print(f"chains handed over to the surviving replica: {handed_over}")


async def test_an_eval_over_a_replica_killed_mid_run_records_no_failure(proxies, tmp_path):
    proxies[1].cut_response(request_number=6, after_events=2)
    problems = [Problem("replicas", f"p{n}", question(n), "math", str(n + 7)) for n in range(8)]
    context = context_on(proxies, threshold=100.0)
    tally = await run_eval(problems, context, tmp_path, dataset="replicas", concurrency=8)
    assert proxies[1].died.is_set(), "the replica was never killed: the eval ended first"
    records = read_results(tmp_path)
    assert (tally.done, tally.failed) == (8, 0), [r.get("error") for r in records]
    assert len(records) == 8 and not any(record.get("error") for record in records)


async def test_both_replicas_dead_is_one_line_naming_both(proxies):
    for proxy in proxies:
        proxy.kill()
    context = context_on(proxies)
    result = await run_question(graph, {"question": question(0)}, context, run_config(context))
    assert result["stop_reason"] == "endpoint_error"
    error = result["error"]
    assert "all 2 replicas of the small model failed" in error and "\n" not in error
    assert all(f"cannot reach the small model server at {p.url}" in error for p in proxies)
