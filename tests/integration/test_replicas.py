"""Replica sets against fake servers: several URLs per role, a chain pinned to one replica per
role, the affinity header, and failover to the role's other replica when one fails."""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict

import pytest

from glimprouter import ConfigError, RouterContext, graph, run_config
from glimprouter.errors import EndpointError
from glimprouter.evals.results import read_results
from glimprouter.evals.runner import run_eval
from glimprouter.graph.invoke import run_question
from glimprouter.model_servers.client import check_endpoints
from glimprouter.model_servers.replicas import ReplicaPicker, rendezvous_order, session_key
from tests.fakes import context_at, fake_model_server, problem

GUARD_S = 120
HEADER = "x-user-id"

# --- settings --------------------------------------------------------------------------------


def test_a_role_takes_one_url_a_list_or_comma_separated_urls(monkeypatch):
    one = RouterContext(small_base_url="http://a:1/v1")
    assert one.replica_urls("small") == ("http://a:1/v1",)
    listed = RouterContext(small_base_url=["http://a:1/v1", "http://b:2/v1"])
    assert listed.small_base_url == "http://a:1/v1,http://b:2/v1"
    assert listed.replica_urls("small") == ("http://a:1/v1", "http://b:2/v1")
    monkeypatch.setenv("GLIMPROUTER_LARGE_BASE_URL", "http://c:3/v1, http://d:4/v1")
    assert RouterContext().replica_urls("large") == ("http://c:3/v1", "http://d:4/v1")
    on_b = listed.on_replica("small", "http://b:2/v1")
    assert on_b.endpoint("small") == ("http://b:2/v1", "small", "EMPTY")
    with pytest.raises(ValueError, match="on_replica"):
        listed.endpoint("small")


@pytest.mark.parametrize(
    ("urls", "needle"),
    [
        ([], "lists no URL"),
        ("", "lists no URL"),
        ("http://a:1/v1,http://a:1/v1/", "lists 'http://a:1/v1/' twice"),
        ("http://a:1/v1,b:2/v1", "holds 'b:2/v1', which lacks the http:// or https://"),
        ("http://a:1/v1,", "holds ''"),
    ],
)
def test_bad_replica_lists_get_one_line_naming_the_setting(urls, needle):
    with pytest.raises(ConfigError) as refused:
        RouterContext(large_base_url=urls)
    message = str(refused.value)
    assert needle in message and "GLIMPROUTER_LARGE_BASE_URL" in message
    assert "\n" not in message


def test_a_refused_replica_list_keeps_passwords_out():
    with pytest.raises(ConfigError) as refused:
        RouterContext(small_base_url="http://u:secret@a:1/v1,ftp://b")
    assert "secret" not in str(refused.value) and "u:***@a:1" in str(refused.value)
    shown = RouterContext(small_base_url="http://u:secret@a:1/v1,http://b:2/v1").shown_url("small")
    assert shown == "http://u:***@a:1/v1,http://b:2/v1"


def test_the_affinity_header_must_be_a_header_name():
    with pytest.raises(ConfigError, match="affinity_header"):
        RouterContext(affinity_header="x user")
    assert RouterContext(affinity_header="").affinity_header == ""


# --- which replica (pure) -------------------------------------------------------------------

URLS = [f"http://10.0.0.{n}:8000/v1" for n in range(1, 5)]


def test_a_chain_ranks_the_replicas_the_same_way_every_time():
    assert rendezvous_order(URLS, "chain-1") == rendezvous_order(list(URLS), "chain-1")
    assert sorted(rendezvous_order(URLS, "chain-1")) == sorted(URLS)
    other_hosts = [url.replace("10.0.0", "10.9.9") for url in URLS]  # same places, same ranks
    assert [URLS.index(u) for u in rendezvous_order(URLS, "c")] == [
        other_hosts.index(u) for u in rendezvous_order(other_hosts, "c")
    ]


def test_chains_spread_evenly_and_losing_a_replica_moves_only_its_chains():
    chains = [f"chain-{n}" for n in range(4000)]
    first = {chain: rendezvous_order(URLS, chain)[0] for chain in chains}
    counts = Counter(first.values())
    assert all(900 <= counts[url] <= 1100 for url in URLS), counts  # 1000 each, +-10%
    picker = ReplicaPicker()
    picker.set_aside(URLS[0], 60.0)
    for chain in chains:
        now = picker.order(URLS, chain, "chain")[0]
        if first[chain] != URLS[0]:
            assert now == first[chain]  # a chain of a healthy replica stays
        else:
            assert now == rendezvous_order(URLS, chain)[1]  # the lost one's go to their second
    moved = Counter(picker.order(URLS, c, "chain")[0] for c in chains if first[c] == URLS[0])
    assert len(moved) == 3  # spread over every survivor, not piled onto one


def test_a_failed_replica_is_tried_last_until_its_cooldown_ends():
    now = [0.0]
    picker = ReplicaPicker(clock=lambda: now[0])
    order = picker.order(URLS, "chain-1", "chain")
    picker.set_aside(order[0], 30.0)
    assert picker.order(URLS, "chain-1", "chain") == [*order[1:], order[0]]
    now[0] = 31.0
    assert picker.order(URLS, "chain-1", "chain") == order
    picker.set_aside(order[0], 30.0)
    picker.restore(order[0])  # it answered a request tried anyway
    assert picker.order(URLS, "chain-1", "chain") == order


def test_without_affinity_requests_take_the_replicas_in_turn():
    picker = ReplicaPicker()
    firsts = [picker.order(URLS, "chain-1", "request")[0] for _ in range(8)]
    assert firsts == URLS + URLS
    assert picker.order(URLS[:2], "chain-1", "request")[0] == URLS[0]  # its own turn per set


# --- against fake replicas -------------------------------------------------------------------


async def run_chains(context: RouterContext, count: int) -> list[dict]:
    """`count` chains at once, in threads chain-00, chain-01, ...: their ids are fixed, so the
    replica each one lands on is the same every run."""

    async def one(n: int) -> dict:
        config = run_config(context, configurable={"thread_id": f"chain-{n:02d}"})
        run = run_question(graph, {"question": f"What is {n} + 2?"}, context, config)
        return await asyncio.wait_for(run, GUARD_S)

    return await asyncio.gather(*(one(n) for n in range(count)))


def chains_per_replica(servers) -> dict[tuple[str, str], set[int]]:
    """(chain id, model) -> the indexes of the replicas that got its requests."""
    seen: dict[tuple[str, str], set[int]] = defaultdict(set)
    for index, server in enumerate(servers):
        for request, headers in zip(server.requests, server.headers, strict=True):
            seen[(headers[HEADER], request["model"])].add(index)
    return seen


async def test_each_chain_stays_on_one_replica_per_role_and_carries_its_id():
    with fake_model_server() as a, fake_model_server() as b:
        urls = [a.url, b.url]
        context = context_at(a.url, small_base_url=urls, large_base_url=urls)
        results = await run_chains(context, 16)
        assert all(r["stop_reason"] == "end_of_sequence" for r in results)
        seen = chains_per_replica([a, b])
        assert len({chain for chain, _ in seen}) == 16  # one id per chain, on every request
        assert all(len(replicas) == 1 for replicas in seen.values())
        small = Counter(next(iter(r)) for (_, model), r in seen.items() if model == "small")
        assert 4 <= small[0] <= 12 and small[0] + small[1] == 16  # the documented balance
        for result in results:
            for step in result["steps"]:
                assert step["replica"] in urls


async def test_a_thread_is_its_own_chain_id_and_travels_hashed():
    with fake_model_server() as a, fake_model_server() as b:
        urls = [a.url, b.url]
        context = context_at(a.url, small_base_url=urls, large_base_url=urls)
        config = run_config(context, configurable={"thread_id": "thread-7"})
        result = await run_question(graph, {"question": "What is 7?"}, context, config)
        assert result["stop_reason"] == "end_of_sequence"
        sent = [headers[HEADER] for server in (a, b) for headers in server.headers]
    assert sent and set(sent) == {session_key("thread-7")}
    assert "thread-7" not in sent[0] and len(sent[0]) == 32


async def test_without_affinity_a_chain_spreads_over_the_replicas():
    with fake_model_server() as a, fake_model_server() as b:
        urls = [a.url, b.url]
        context = context_at(
            a.url, small_base_url=urls, large_base_url=urls, replica_affinity="request"
        )
        # One chain: several chains in lockstep can each keep one parity of the shared turns.
        (result,) = await run_chains(context, 1)
        seen = chains_per_replica([a, b])
    assert result["error"] is None and len(result["steps"]) >= 2
    small = [replicas for (_, model), replicas in seen.items() if model == "small"]
    assert small == [{0, 1}], seen


@pytest.mark.parametrize("fault", ["500", "drop"])
async def test_a_failing_replica_hands_its_chains_to_the_other_with_nothing_lost(fault):
    with fake_model_server() as a, fake_model_server() as b:
        urls = [a.url, b.url]
        healthy = await run_chains(context_at(b.url, threshold=100.0), 8)
        context = context_at(
            a.url, small_base_url=urls, large_base_url=urls, threshold=100.0, max_retries=1
        )
        # Replica a fails from its 6th request on: chains pinned to it are mid-way by then.
        a.fault = lambda index, _: fault if index >= 5 else None
        results = await run_chains(context, 8)
    assert all(r["stop_reason"] == "end_of_sequence" and not r.get("error") for r in results)
    for before, after in zip(healthy, results, strict=True):
        assert [s["text"] for s in after["steps"]] == [s["text"] for s in before["steps"]]
        assert len({s["index"] for s in after["steps"]}) == len(after["steps"])
    # Some chain wrote its first steps on a and the rest on b, each step exactly once.
    assert any(r["steps"][0]["replica"] == a.url != r["steps"][-1]["replica"] for r in results)


async def test_when_every_replica_fails_the_one_line_error_names_them_all():
    with fake_model_server(fault=lambda *_: "500") as a, fake_model_server() as b:
        b.fault = lambda *_: "500"
        urls = [a.url, b.url]
        context = context_at(a.url, small_base_url=urls, large_base_url=urls)
        (result,) = await run_chains(context, 1)
    assert result["stop_reason"] == "endpoint_error"
    error = result["error"]
    assert "all 2 replicas of the small model failed" in error
    assert a.url in error and b.url in error and "\n" not in error


async def test_a_replica_down_at_the_start_is_a_warning_and_the_run_goes_on_without_it():
    with fake_model_server() as a:
        with fake_model_server() as gone:
            dead = gone.url
        context = context_at(a.url, large_base_url=[dead, a.url], threshold=0.0)
        report = await check_endpoints(context)
        (warning,) = report.warnings
        assert f"cannot reach the large model server at {dead}" in warning
        assert "chains go to the other large replicas" in warning and "\n" not in warning
        (result,) = await run_chains(context, 1)
    assert result["error"] is None and {s["replica"] for s in result["steps"]} == {a.url}


async def test_the_start_up_check_refuses_a_role_none_of_whose_replicas_answers():
    with fake_model_server() as a:
        with fake_model_server() as gone, fake_model_server() as also_gone:
            dead = [gone.url, also_gone.url]
        context = context_at(a.url, large_base_url=dead)
        with pytest.raises(EndpointError) as refused:
            await check_endpoints(context)
    message = str(refused.value)
    assert "all 2 replicas of the large model failed" in message and "\n" not in message
    assert all(f"cannot reach the large model server at {url}" in message for url in dead)


async def test_the_start_up_check_refuses_replicas_of_a_role_that_serve_different_models():
    with fake_model_server(root="org/model-a") as a, fake_model_server(root="org/model-b") as b:
        same = context_at(a.url, small_base_url=[a.url, a.url.replace("127.0.0.1", "localhost")])
        assert (await check_endpoints(same)).served["small"] == "org/model-a"
        with pytest.raises(EndpointError) as refused:
            await check_endpoints(context_at(a.url, small_base_url=[a.url, b.url]))
    message = str(refused.value)
    assert f"the small model server at {b.url} serves org/model-b" in message
    assert "another small replica serves org/model-a" in message and "\n" not in message
    assert "give --small-url / GLIMPROUTER_SMALL_BASE_URL replicas of one model" in message


async def test_an_eval_over_a_failing_replica_records_no_failure(tmp_path):
    with fake_model_server() as a, fake_model_server() as b:
        urls = [a.url, b.url]
        context = context_at(a.url, small_base_url=urls, large_base_url=urls, threshold=100.0)
        a.fault = lambda index, _: "drop" if index >= 4 else None
        problems = [problem(f"p{n}") for n in range(6)]
        tally = await run_eval(problems, context, tmp_path, dataset="faults", concurrency=6)
    assert (tally.done, tally.failed) == (6, 0)
    assert not any(record.get("error") for record in read_results(tmp_path))
