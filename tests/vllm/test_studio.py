"""LangGraph Studio's view of the project: `langgraph dev` on langgraph.json, offline, driven
through the SDK as Studio drives it.

The server runs behind a proxy trap: HTTP(S)_PROXY points at a local socket that records every
request and answers none, so any call to an outside service (CLI analytics, the PyPI version
check, LangSmith) shows up as a recorded request. Only the model server is exempt (NO_PROXY).
"""

from __future__ import annotations

import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import get_args
from urllib.parse import urlsplit

import httpx
import pytest
from langgraph_sdk import get_client

from glimprouter.graph.context import RouterContext
from glimprouter.graph.state import InputState, OutputState, StopReason
from glimprouter.vllm_launcher.command import free_port
from tests.contract import ROUTER_NODES
from tests.paths import REPO
from tests.processes import start, wait_until

pytestmark = pytest.mark.vllm

ROOT = REPO
LANGGRAPH = Path(sys.executable).with_name("langgraph")
# An upper bound that turns a hang into a failure on the slowest machine, never a guess at how
# long `langgraph dev` takes to start.
STARTUP_TIMEOUT_S = 900
# What `langgraph dev` needs in the shell to stay offline; langgraph.json adds the rest.
OFFLINE_ENV = {"LANGGRAPH_CLI_NO_ANALYTICS": "1", "LANGSMITH_TRACING": "false"}
TINY_CONTEXT = {
    "step_max_tokens": 16,
    "token_budget": 48,
    "answer_max_tokens": 16,
    "request_timeout": 120,
    "seed": 0,
}


class ProxyTrap:
    """A local 'proxy' that records the first line of every request sent to it and closes."""

    def __init__(self) -> None:
        self._socket = socket.create_server(("127.0.0.1", 0))
        self._socket.settimeout(0.2)
        self.requests: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._socket.getsockname()[1]}"

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self._socket.accept()
            except TimeoutError:
                continue
            with connection:
                connection.settimeout(2)
                try:
                    first_line = connection.recv(4096).split(b"\r\n", 1)[0]
                except OSError:
                    first_line = b"(no request line)"
                self.requests.append(first_line.decode(errors="replace"))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._socket.close()


def dev_env(trap: ProxyTrap, model_base_url: str, offline: bool = True) -> dict[str, str]:
    """The environment of `langgraph dev`: proxied into the trap, endpoints from GLIMPROUTER_*."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.upper().startswith(("LANGSMITH_", "LANGCHAIN_", "LANGGRAPH_"))
        and key.lower() not in ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
    }
    no_proxy = ",".join(
        dict.fromkeys(["127.0.0.1", "localhost", urlsplit(model_base_url).hostname])
    )
    for name in ("http_proxy", "https_proxy", "all_proxy"):
        env[name] = env[name.upper()] = trap.url
    env["no_proxy"] = env["NO_PROXY"] = no_proxy
    env.update(
        GLIMPROUTER_SMALL_BASE_URL=model_base_url,
        GLIMPROUTER_LARGE_BASE_URL=model_base_url,
        GLIMPROUTER_SMALL_MODEL="small",
        GLIMPROUTER_LARGE_MODEL="large",
    )
    if offline:
        env.update(OFFLINE_ENV)
    return env


@dataclass
class DevServer:
    process: subprocess.Popen
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:]

    def stop(self) -> int:
        """Terminate the server's process group; its exit status."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=30)
                raise AssertionError("langgraph dev ignored SIGTERM for 60 s") from None
        return self.process.returncode


def start_dev(env: dict[str, str], workdir: Path) -> DevServer:
    """`langgraph dev --no-browser --no-reload --port P` on the repository's langgraph.json (not
    yet ready), from `workdir`: the state it keeps in .langgraph_api lands there, not in the
    repository."""
    for name in ("langgraph.json", "glimprouter", "examples"):
        (workdir / name).symlink_to(ROOT / name)
    port = free_port()
    log = workdir / "langgraph-dev.log"
    with log.open("w") as out:
        process = start(
            [str(LANGGRAPH), "dev", "--no-browser", "--no-reload", "--port", str(port)],
            cwd=workdir,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return DevServer(process, port, log)


def wait_until_ready(server: DevServer) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise AssertionError(
                f"langgraph dev exited {server.process.returncode}:\n{server.log_tail()}"
            )
        try:
            if httpx.get(f"{server.url}/ok", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    server.stop()
    raise AssertionError(f"langgraph dev not ready in {STARTUP_TIMEOUT_S} s:\n{server.log_tail()}")


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def trap() -> Iterator[ProxyTrap]:
    trap = ProxyTrap()
    yield trap
    trap.close()


@pytest.fixture(scope="module")
def studio(
    vllm_base_url: str, trap: ProxyTrap, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DevServer]:
    """The dev server Studio would talk to."""
    server = start_dev(dev_env(trap, vllm_base_url), tmp_path_factory.mktemp("studio"))
    try:
        wait_until_ready(server)
        yield server
    finally:
        server.stop()


async def assistant_of(url: str, graph_id: str) -> dict:
    found = await get_client(url=url).assistants.search(graph_id=graph_id)
    assert len(found) == 1, found
    return found[0]


async def test_studio_lists_the_router_and_the_example_agent(studio):
    assistants = await get_client(url=studio.url).assistants.search()
    assert {assistant["graph_id"] for assistant in assistants} == {
        "glimprouter",
        "solve_then_verify",
    }
    names = {assistant["graph_id"]: assistant["name"] for assistant in assistants}
    assert names["glimprouter"] == "GlimpRouter"


async def test_studio_draws_every_node_of_the_router(studio):
    assistant = await assistant_of(studio.url, "glimprouter")
    drawn = await get_client(url=studio.url).assistants.get_graph(assistant["assistant_id"])
    assert {node["id"] for node in drawn["nodes"]} == ROUTER_NODES | {"__start__", "__end__"}
    assert {(edge["source"], edge["target"]) for edge in drawn["edges"]} >= {
        ("__start__", "glimpse"),
        ("decide", "small_step"),
        ("decide", "large_step"),
        ("check_termination", "glimpse"),
        ("answer", "__end__"),
    }


async def test_studio_shows_input_output_and_every_context_knob(studio):
    client = get_client(url=studio.url)
    knobs = {f.name for f in fields(RouterContext)}

    router = await client.assistants.get_schemas(
        (await assistant_of(studio.url, "glimprouter"))["assistant_id"]
    )
    assert set(router["input_schema"]["properties"]) == set(InputState.__annotations__)
    assert router["input_schema"]["required"] == ["question"]
    assert set(router["output_schema"]["properties"]) == set(OutputState.__annotations__)
    context = router["context_schema"]["properties"]
    assert set(context) == knobs
    assert all(context[name].get("description") for name in knobs)

    agent = await client.assistants.get_schemas(
        (await assistant_of(studio.url, "solve_then_verify"))["assistant_id"]
    )
    assert set(agent["input_schema"]["properties"]) == {"problem"}
    assert {"answer", "final_answer", "verdict", "attempts"} <= set(
        agent["output_schema"]["properties"]
    )
    agent_knobs = agent["context_schema"]["properties"]
    assert set(agent_knobs) == knobs | {"max_attempts", "verifier_model", "verify_max_tokens"}
    assert all(knob.get("description") for knob in agent_knobs.values())


async def test_a_studio_run_streams_routed_steps_with_the_run_context(studio):
    client = get_client(url=studio.url)
    thread = await client.threads.create()
    steps, last_values, errors = [], None, []
    # Endpoints come from the server's GLIMPROUTER_* variables; the budgets from the run.
    async for part in client.runs.stream(
        thread["thread_id"],
        "glimprouter",
        input={"question": "What is 2 + 3?"},
        stream_mode=["custom", "values"],
        context=TINY_CONTEXT,
    ):
        if part.event == "custom" and part.data.get("event") == "step":
            steps.append(part.data)
        elif part.event == "values":
            last_values = part.data
        elif part.event == "error":
            errors.append(part.data)
    assert not errors, f"{errors}\n{studio.log_tail()}"
    assert steps, studio.log_tail()
    assert [step["index"] for step in steps] == list(range(len(steps)))
    for step in steps:
        assert step["model"] in ("small", "large")
        # The entropy of at most top_k candidates renormalised: between 0 and ln(top_k).
        assert isinstance(step["entropy"], float)
        assert 0 <= step["entropy"] <= math.log(RouterContext().top_k) + 1e-9
        assert step["completion_tokens"] <= TINY_CONTEXT["step_max_tokens"]
    assert sum(step["completion_tokens"] for step in steps) <= TINY_CONTEXT["token_budget"]
    assert last_values["steps"] == [
        {key: value for key, value in step.items() if key != "event"} for step in steps
    ]
    assert isinstance(last_values["answer"], str)
    assert last_values["stop_reason"] in get_args(StopReason)
    assert not last_values.get("error"), last_values["error"]
    # The thread keeps the run's state, as Studio shows it.
    state = await client.threads.get_state(thread["thread_id"])
    assert state["values"]["answer"] == last_values["answer"]


def test_the_dev_server_phoned_nowhere_and_stops_on_sigterm(studio, trap):
    assert trap.requests == [], f"langgraph dev called out: {trap.requests}"
    exit_code = studio.stop()
    assert exit_code in (0, -signal.SIGTERM), f"exit {exit_code}:\n{studio.log_tail()}"
    assert not port_open(studio.port), "langgraph dev still listens after SIGTERM"
    assert (studio.log.parent / ".langgraph_api").is_dir()  # its state: beside it, not in the repo


def test_the_trap_catches_a_call_home(tmp_path):
    """Control: without the offline settings the CLI's analytics request lands in the trap, so
    an empty trap above means nothing called out."""
    trap = ProxyTrap()
    unused_models = "http://127.0.0.1:9/v1"  # this server never runs the graph
    server = start_dev(dev_env(trap, unused_models, offline=False), tmp_path)
    try:
        wait_until(
            lambda: any(request.startswith("CONNECT ") for request in trap.requests),
            STARTUP_TIMEOUT_S,
            f"the analytics call in the trap (recorded: {trap.requests})",
        )
    finally:
        server.stop()
        trap.close()
