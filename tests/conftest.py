"""Shared fixtures: a real vLLM server (SmolLM2-135M from its PyPI package) for the server tests.

The server is started once per session through `glimprouter serve --model`, so every server test
also exercises the serve command: one model served under the names "small" and "large", and at
the end a Ctrl-C that must stop vLLM cleanly. Set GLIMPROUTER_TEST_BASE_URL to use a server that
is already running instead.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from glimprouter.graph.context import RouterContext

SERVE_TIMEOUT_S = 900


@pytest.fixture(scope="session")
def vllm_base_url() -> Iterator[str]:
    if os.environ.get("GLIMPROUTER_TEST_BASE_URL"):
        yield os.environ["GLIMPROUTER_TEST_BASE_URL"]
        return
    from glimprouter.serving.launcher import free_port
    from glimprouter.serving.local_models import prepare

    port = free_port()
    serve = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "glimprouter.cli",
            "serve",
            "--model",
            str(prepare("smollm2-135m")),
            "--small-port",
            str(port),
        ],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        yield _wait_for_endpoint(serve, "large:")
    finally:
        serve.send_signal(signal.SIGINT)  # what Ctrl-C sends
        exit_code = serve.wait(timeout=120)
    assert exit_code == 0, f"glimprouter serve exited {exit_code} on Ctrl-C"
    assert not _port_open(port), "vLLM still listens after glimprouter serve stopped"


def _wait_for_endpoint(serve: subprocess.Popen, role_prefix: str) -> str:
    deadline = time.monotonic() + SERVE_TIMEOUT_S
    assert serve.stdout is not None
    for line in serve.stdout:
        if line.startswith(role_prefix):
            return line.split()[1]
        if time.monotonic() > deadline:
            break
    serve.kill()
    raise RuntimeError(
        f"glimprouter serve printed no {role_prefix!r} endpoint (exit "
        f"{serve.poll()}); see the vLLM log under ~/.cache/glimprouter/logs"
    )


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


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
