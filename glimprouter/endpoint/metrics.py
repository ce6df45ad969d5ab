"""What serve-router does, for Prometheus (prometheus-client): requests by route and status,
chains running and waiting, chains finished by stop reason and their duration, steps by writer,
the glimpse entropy, tokens and requests per model role, model-server errors per role. Served as
GET /metrics in Prometheus' text format.

Behind `serve-router --workers N` every worker writes its values to PROMETHEUS_MULTIPROC_DIR
(prometheus-client's multiprocess mode, chosen by that variable when prometheus-client is
imported), and a scrape answered by any worker sums them all: counters and histograms over every
worker that ever ran, the running and waiting gauges over the live ones."""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from glimprouter.endpoint.errors import failed_role

MULTIPROCESS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"

# Routes by name: any other path counts as "other", so a scanner cannot grow the label set.
ROUTES = ("/v1/chat/completions", "/v1/models", "/health", "/metrics", "/openapi.json")
ENTROPY_BUCKETS = (0.1, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0)
CHAIN_SECONDS_BUCKETS = (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1200, 3600)


class RouterMetrics:
    """The endpoint's metrics, in a registry of their own (one per app)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self.requests = Counter(
            "glimprouter_http_requests", "HTTP requests by route and status code",
            ["route", "code"], registry=registry,
        )  # fmt: skip
        # livesum: a worker that died runs and waits for nothing, whatever it last wrote.
        self.running = Gauge(
            "glimprouter_chains_running", "chains being run", multiprocess_mode="livesum",
            registry=registry,
        )  # fmt: skip
        self.waiting = Gauge(
            "glimprouter_chains_waiting", "chains waiting for --max-concurrency",
            multiprocess_mode="livesum", registry=registry,
        )  # fmt: skip
        self.chains = Counter(
            "glimprouter_chains_finished", "chains finished, by stop reason", ["stop_reason"],
            registry=registry,
        )  # fmt: skip
        self.chain_seconds = Histogram(
            "glimprouter_chain_duration_seconds", "wall time of a chain, from its slot to its end",
            buckets=CHAIN_SECONDS_BUCKETS, registry=registry,
        )  # fmt: skip
        self.steps = Counter(
            "glimprouter_steps", "steps written, by writer", ["writer"], registry=registry
        )
        self.entropy = Histogram(
            "glimprouter_glimpse_entropy_nats", "entropy of each glimpse (nats)",
            buckets=ENTROPY_BUCKETS, registry=registry,
        )  # fmt: skip
        self.tokens = Counter(
            "glimprouter_model_tokens", "tokens per model role, prompt or completion",
            ["role", "kind"], registry=registry,
        )  # fmt: skip
        self.model_requests = Counter(
            "glimprouter_model_requests", "requests to each model role", ["role"],
            registry=registry,
        )  # fmt: skip
        self.model_errors = Counter(
            "glimprouter_model_server_errors", "chains ended by a failing model server, per role",
            ["role"], registry=registry,
        )  # fmt: skip

    def record_chain(self, output: dict[str, Any], seconds: float) -> None:
        """Count a finished chain (or one a model server ended)."""
        self.chains.labels(output.get("stop_reason") or "unknown").inc()
        self.chain_seconds.observe(seconds)
        for step in output.get("steps") or []:
            self.steps.labels(step["model"]).inc()
            if step.get("entropy") is not None:
                self.entropy.observe(step["entropy"])
        for role, usage in (output.get("usage") or {}).items():
            self.tokens.labels(role, "prompt").inc(usage.get("prompt_tokens", 0))
            self.tokens.labels(role, "completion").inc(usage.get("completion_tokens", 0))
            self.model_requests.labels(role).inc(usage.get("requests", 0))
        if error := output.get("error"):
            self.model_errors.labels(failed_role(error)).inc()

    def record_load(self, running: int, waiting: int) -> None:
        """This process's chains running and waiting (a Load's `on_change`)."""
        self.running.set(running)
        self.waiting.set(waiting)

    def exposition(self) -> bytes:
        """The metrics in Prometheus' text format: every worker's, in multiprocess mode."""
        if directory := os.environ.get(MULTIPROCESS_DIR_ENV):
            # prometheus-client's recipe: a fresh registry that only reads the workers' files.
            everyone = CollectorRegistry()
            MultiProcessCollector(everyone, path=directory)
            return generate_latest(everyone)
        return generate_latest(self.registry)


class CountRequests:
    """ASGI middleware: each response's status, by route."""

    def __init__(self, app: ASGIApp, metrics: RouterMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = scope["path"] if scope["path"] in ROUTES else "other"

        async def counted(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.metrics.requests.labels(route, str(message["status"])).inc()
            await send(message)

        await self.app(scope, receive, counted)
