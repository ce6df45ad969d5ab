"""What a request may cost: by default no more than the server's own settings, in every knob; the
serve-router flags that widen it; and the bound on every token a chain generates.

The app runs in-process against the fake model server of tests/fakes.py (a step is 4 tokens, the
answer 6). The server's own settings are context_at's: glimprouter at threshold 1.0, large_rate
0.5, the streamed glimpse, the large model answering.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from starlette.testclient import TestClient

from glimprouter.cli import main
from glimprouter.endpoint import RouterLimits, create_app
from glimprouter.endpoint.limits import (
    COST_LIMITS,
    bounds,
    default_chain_tokens,
    limit_flag,
    refusal,
)
from glimprouter.errors import ConfigError
from glimprouter.graph.context import RouterContext
from glimprouter.strategies import STRATEGIES, choices, costing_no_more
from tests.fakes import chat, context_at

WIDE = RouterLimits(
    allow_methods=tuple(STRATEGIES),
    allow_glimpse_modes=("stream", "probe"),
    allow_answer_models=("small", "large"),
    min_threshold=0,
    max_threshold=9,
    max_large_rate=1,
    max_chain_tokens_limit=10**6,
    max_step_tokens=32,
)


@pytest.fixture(scope="module")
def servers(backend):
    """A server with the default limits, one whose answers the small model writes, and one
    widened by every flag."""
    apps = {
        "default": create_app(context_at(backend.url)),
        "small_answers": create_app(context_at(backend.url, answer_model="small")),
        "random": create_app(
            context_at(backend.url), RouterLimits(allow_methods=("glimprouter", "random"))
        ),
        "specreason": create_app(
            context_at(backend.url), RouterLimits(allow_methods=("glimprouter", "specreason"))
        ),
        "wide": create_app(context_at(backend.url), WIDE),
    }
    clients = {name: TestClient(app) for name, app in apps.items()}
    for client in clients.values():
        client.__enter__()
    yield clients
    for client in clients.values():
        client.__exit__(None, None, None)


REFUSED = [
    ("default", {"method": "large-only"}, "method", "--allow-methods"),
    ("default", {"method": "specreason"}, "method", "--allow-methods"),
    ("default", {"threshold": 0.5}, "threshold", "below this server's limit of 1.0"),
    ("default", {"threshold": 0}, "threshold", "--min-threshold"),
    ("default", {"glimpse_mode": "probe"}, "glimpse_mode", "--allow-glimpse-modes"),
    ("small_answers", {"answer_model": "large"}, "answer_model", "--allow-answer-models"),
    ("random", {"method": "random", "large_rate": 0.9}, "large_rate", "--max-large-rate"),
    # specreason rewrites a draft scored below its threshold: a higher one costs more.
    ("specreason", {"method": "specreason", "threshold": 5}, "threshold", "--max-threshold"),
    ("default", {"max_chain_tokens": 10**6}, "max_chain_tokens", "--max-chain-tokens-limit"),
    ("default", {"step_max_tokens": 17}, "step_max_tokens", "--max-step-tokens"),
]


@pytest.mark.parametrize(("server", "fields", "param", "needle"), REFUSED)
def test_a_request_costing_more_than_the_server_is_refused_naming_the_flag(
    servers, backend, server, fields, param, needle
):
    before = len(backend.requests)
    reply = servers[server].post("/v1/chat/completions", json=chat(**fields))
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert needle in error["message"]
    assert error["code"].startswith("value_")
    assert len(backend.requests) == before, "a refused request must not reach a model server"


@pytest.mark.parametrize(("server", "fields", "param", "needle"), REFUSED)
def test_the_widened_server_accepts_it(servers, server, fields, param, needle):
    reply = servers["wide"].post("/v1/chat/completions", json=chat(**fields, max_steps=2))
    assert reply.status_code == 200, reply.text


@pytest.mark.parametrize(
    ("server", "fields"),
    [
        ("default", {"method": "small-only"}),  # the cheapest method is always allowed
        ("default", {"threshold": 2.5}),  # fewer large steps
        ("default", {"large_rate": 1.0}),  # glimprouter does not read it
        ("default", {"method": "small-only", "threshold": 0}),  # nor does small-only
        ("default", {"answer_model": "small"}),
        ("random", {"method": "random", "large_rate": 0.2}),
        ("specreason", {"method": "specreason", "threshold": 0.5}),  # fewer rewrites
    ],
)
def test_a_request_costing_no_more_runs(servers, server, fields):
    reply = servers[server].post("/v1/chat/completions", json=chat(**fields))
    assert reply.status_code == 200, reply.text


def test_a_lowered_chain_bound_stops_the_chain_with_length(servers):
    reply = servers["default"].post("/v1/chat/completions", json=chat(max_chain_tokens=16 + 8))
    assert reply.status_code == 200, reply.text
    body = reply.json()
    routing = body["usage"]["glimprouter"]
    assert routing["stop_reason"] == "max_chain_tokens"
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] <= 16 + 8


def test_the_server_bounds_every_chain_by_default(backend):
    limits = RouterLimits(max_token_budget=100)
    context = context_at(backend.url)  # token_budget 64, max_steps 512, answer_max_tokens 16
    assert default_chain_tokens(limits, context) == 2 * 100 + 512 + 16
    capped = dataclasses.replace(limits, max_chain_tokens_limit=300)
    assert default_chain_tokens(capped, context) == 300
    with TestClient(create_app(context, limits)) as client:
        reply = client.post("/v1/chat/completions", json=chat(max_chain_tokens=729))
        assert reply.status_code == 400 and "of 728 (--max-chain-tokens-limit)" in reply.text
    given = dataclasses.replace(context, max_chain_tokens=40)
    with TestClient(create_app(given)) as client:
        assert client.post("/v1/chat/completions", json=chat(max_chain_tokens=40)).is_success
        refused = client.post("/v1/chat/completions", json=chat(max_chain_tokens=41)).json()
        assert "of 40 (--max-chain-tokens-limit)" in refused["error"]["message"]


@pytest.mark.parametrize(
    ("limits", "context", "needle"),
    [
        (
            RouterLimits(allow_methods=("magic",)),
            {},
            "--allow-methods: unknown method ['magic']; valid",
        ),
        (RouterLimits(allow_methods=("small-only",)), {}, "not in --allow-methods"),
        (RouterLimits(allow_glimpse_modes=("stream",)), {"glimpse_mode": "probe"}, "probe"),
        (RouterLimits(min_threshold=2), {}, "threshold=1.0 is below --min-threshold 2"),
        (RouterLimits(max_large_rate=0.1), {"method": "random"}, "above --max-large-rate 0.1"),
        (RouterLimits(max_chain_tokens_limit=16), {}, "--max-chain-tokens-limit 16 leaves no"),
    ],
)
def test_limits_that_break_the_servers_own_settings_fail_at_startup(
    backend, limits, context, needle
):
    with pytest.raises(ConfigError, match="^[^\n]+$") as error:
        create_app(context_at(backend.url, **context), limits)
    assert needle in str(error.value)


def test_limits_the_server_itself_does_not_read_are_no_error(backend):
    # Its method is glimprouter: a large_rate or specreason's threshold bound constrains only
    # the requests that pick those methods.
    create_app(context_at(backend.url), RouterLimits(max_large_rate=0.1, max_threshold=0.5))


def test_the_command_refuses_an_unknown_method_in_one_line(capsys):
    argv = ["serve-router", "--allow-methods", "glimprouter,magic", "--port", "0"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "valid: ['glimprouter', 'small-only'" in err


class TestCostCheck:
    """The pure cost check: what a run may pick and how far it may move each knob."""

    # glimprouter, threshold 1.0, large_rate 0.5, stream, the large model answering
    BASE = RouterContext(max_chain_tokens=10**5)
    DEFAULT = RouterLimits()

    def refused(self, limits: RouterLimits = DEFAULT, **knobs: Any) -> str | None:
        found = refusal(dataclasses.replace(self.BASE, **knobs), bounds(limits, self.BASE), {})
        return found and found.knob

    def test_the_servers_own_settings_pass(self):
        assert self.refused() is None

    def test_cheapest_method_and_cost_orders(self):
        assert costing_no_more("method", "large-only") == ("large-only", "small-only")
        assert costing_no_more("method", "small-only") == ("small-only",)
        assert costing_no_more("glimpse_mode", "stream") == ("stream",)
        assert costing_no_more("glimpse_mode", "probe") == ("stream", "probe")
        assert costing_no_more("answer_model", "large") == ("small", "large")
        assert set(choices("method")) == set(STRATEGIES)

    def test_each_knob_only_the_way_that_costs_more(self):
        assert self.refused(threshold=0.99) == "threshold"
        assert self.refused(threshold=1.01) is None
        assert self.refused(method="random", large_rate=0.51) == "method"
        wide = RouterLimits(allow_methods=tuple(STRATEGIES))
        assert self.refused(wide, method="random", large_rate=0.51) == "large_rate"
        assert self.refused(wide, method="random", large_rate=0.49, threshold=0) is None
        assert self.refused(wide, method="specreason", threshold=1.01) == "threshold"
        assert self.refused(wide, method="step-ppl", threshold=0.99) == "threshold"
        assert self.refused(wide, method="large-only", threshold=0, large_rate=1) is None
        assert self.refused(token_budget=8193) == "token_budget"
        assert self.refused(max_chain_tokens=10**5 + 1) == "max_chain_tokens"

    def test_a_flag_widens_its_own_knob_only(self):
        lower = RouterLimits(min_threshold=0.25)
        assert self.refused(lower, threshold=0.25) is None
        assert self.refused(lower, threshold=0.24) == "threshold"
        assert self.refused(lower, threshold=0.25, glimpse_mode="probe") == "glimpse_mode"

    def test_every_knob_a_strategy_reads_has_a_flag_each_way_it_costs_more(self):
        declared = {(f.metadata["knob"], f.metadata.get("refused")) for f in COST_LIMITS}
        read = {(k, way) for s in STRATEGIES.values() for k, way in s.costlier.items()}
        assert read <= declared
        choice_knobs = {"method", "glimpse_mode", "answer_model"}
        assert {knob for knob, way in declared if way is None} == choice_knobs
        assert limit_flag("allow_methods") == "--allow-methods"
