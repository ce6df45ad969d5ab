"""Shared fixtures: a real vLLM server (SmolLM2-135M from its PyPI package) for the server tests.

The server is started once per session, serving one model under the names "small" and "large".
Set GLIMPROUTER_TEST_BASE_URL to use a server that is already running instead.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from glimprouter.graph.context import RouterContext

SERVED_NAMES = ["small", "large"]


@pytest.fixture(scope="session")
def vllm_base_url() -> Iterator[str]:
    if os.environ.get("GLIMPROUTER_TEST_BASE_URL"):
        yield os.environ["GLIMPROUTER_TEST_BASE_URL"]
        return
    from glimprouter.serving.launcher import ServerSpec, free_port, serve
    from glimprouter.serving.local_models import prepare

    spec = ServerSpec(
        model=str(prepare("smollm2-135m")),
        served_names=SERVED_NAMES,
        port=free_port(),
        max_logprobs=20,
        kv_cache_gib=2,
    )
    with serve([spec]) as servers:
        yield servers[0].base_url


@pytest.fixture
def server_context(vllm_base_url: str) -> RouterContext:
    """Both roles on the test server, with budgets small enough for a CPU."""
    return RouterContext(
        small_base_url=vllm_base_url,
        large_base_url=vllm_base_url,
        small_model="small",
        large_model="large",
        step_max_tokens=40,
        token_budget=160,
        answer_max_tokens=48,
        request_timeout=120,
        seed=0,
    )
