"""serve-router's /metrics: after known runs, every scraped value equals what the runs' own
replies report (usage, steps, stop reasons), and the request counts match what was sent."""

from __future__ import annotations

import json

import pytest
from starlette.testclient import TestClient

from glimprouter.endpoint import RouterLimits, create_app
from glimprouter.endpoint.keys import ApiKeys
from tests.fakes import chat, context_at, fake_model_server
from tests.routers import samples

KEY = "sk-metrics-test"
AUTH = {"Authorization": f"Bearer {KEY}"}


def scrape(client, headers=AUTH) -> dict[tuple[str, tuple], float]:
    """Every sample of /metrics, by (name, sorted labels)."""
    return samples(client.get("/metrics", headers=headers))


def stream_usage(client, body: dict) -> dict:
    with client.stream("POST", "/v1/chat/completions", json=body, headers=AUTH) as reply:
        events = [line[6:] for line in reply.iter_lines() if line.startswith("data: {")]
    return json.loads(events[-1])["usage"]


@pytest.mark.parametrize("open_metrics", [False, True])
def test_scraped_values_equal_the_runs_usage(open_metrics):
    with fake_model_server() as server:
        app = create_app(
            context_at(server.url),
            RouterLimits(max_token_budget=64, allow_methods=("glimprouter", "large-only")),
            api_keys=ApiKeys([KEY]),
            open_metrics=open_metrics,
        )
        with TestClient(app) as client:
            usages = [
                client.post("/v1/chat/completions", json=chat(f"q{n}"), headers=AUTH).json()[
                    "usage"
                ]
                for n in range(3)
            ]
            usages.append(
                stream_usage(
                    client, chat("q3", stream=True, stream_options={"include_usage": True})
                )
            )
            usages.append(
                client.post(
                    "/v1/chat/completions", json=chat("q4", method="large-only"), headers=AUTH
                ).json()["usage"]
            )
            assert (
                client.post(
                    "/v1/chat/completions", json=chat("q", top_k=99), headers=AUTH
                ).status_code
                == 400
            )
            assert client.post("/v1/chat/completions", json=chat("q")).status_code == 401
            unauthenticated = client.get("/metrics")
            assert unauthenticated.status_code == (200 if open_metrics else 401)
            samples = scrape(client)

    def value(name: str, **labels) -> float:
        return samples.get((name, tuple(sorted(labels.items()))), 0.0)

    routing = [usage["glimprouter"] for usage in usages]
    assert value("glimprouter_http_requests_total", route="/v1/chat/completions", code="200") == 5
    assert value("glimprouter_http_requests_total", route="/v1/chat/completions", code="400") == 1
    assert value("glimprouter_http_requests_total", route="/v1/chat/completions", code="401") == 1
    assert value("glimprouter_http_requests_total", route="/metrics", code="401") == (
        0 if open_metrics else 1
    )
    reasons = {r["stop_reason"] for r in routing}
    for reason in reasons:
        expected = sum(r["stop_reason"] == reason for r in routing)
        assert value("glimprouter_chains_finished_total", stop_reason=reason) == expected
    assert value("glimprouter_chain_duration_seconds_count") == 5
    large = sum(r["large_steps"] for r in routing)
    assert value("glimprouter_steps_total", writer="large") == large
    assert (
        value("glimprouter_steps_total", writer="small") == sum(r["steps"] for r in routing) - large
    )
    for role in ("small", "large"):
        for kind in ("prompt", "completion"):
            expected = sum(r[role][f"{kind}_tokens"] for r in routing)
            assert value("glimprouter_model_tokens_total", role=role, kind=kind) == expected
        assert value("glimprouter_model_requests_total", role=role) == sum(
            r[role]["requests"] for r in routing
        )
    # The glimpsing runs (all but large-only) glimpse before each step they write.
    glimpsed = sum(r["steps"] for r in routing[:4])
    assert value("glimprouter_glimpse_entropy_nats_count") == glimpsed > 0
    assert value("glimprouter_chains_running") == value("glimprouter_chains_waiting") == 0


def test_a_failing_model_server_is_counted_by_role():
    with fake_model_server(fail_model="large") as server:
        with TestClient(create_app(context_at(server.url, method="large-only"))) as client:
            reply = client.post("/v1/chat/completions", json=chat("q"))
            assert reply.status_code == 502
            samples = scrape(client, headers={})
    assert samples[("glimprouter_model_server_errors_total", (("role", "large"),))] == 1
    assert samples[("glimprouter_chains_finished_total", (("stop_reason", "endpoint_error"),))] == 1
    assert (
        samples[
            (
                "glimprouter_http_requests_total",
                (("code", "502"), ("route", "/v1/chat/completions")),
            )
        ]
        == 1
    )
