"""serve-router against clients that would hold it: a slow header or body, a stream nobody reads,
a flood beyond the waiting queue, too many streams on one key, a cross-site "simple" POST and a
foreign Host. Each is refused or cut off within its bound while other clients are served.

The connection bounds run the real uvicorn server (server.uvicorn_config) in a thread, driven
by raw sockets; waits synchronise on what the server does (a closed socket, a model request
received or closed), with a generous deadline only as a failure guard.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.testclient import TestClient

from glimprouter.cli import build_parser
from glimprouter.endpoint import RouterLimits, create_app
from glimprouter.endpoint.hosts import answered_hosts, host_name
from glimprouter.endpoint.keys import ApiKeys
from glimprouter.endpoint.server import uvicorn_config
from glimprouter.errors import ConfigError
from tests.fakes import chat, context_at, fake_model_server
from tests.processes import wait_until, wait_until_async

GUARD_S = 60  # an upper bound for a slow machine, never a guess at how long something takes
# The router's header, body and send timeouts here: a stalled client passes them, and a client
# that sends and reads at once beats them by far, on a loaded machine too.
BOUND_S = 3.0
KEYS = ["sk-wire-first-0123456789", "sk-wire-second-abcdefghij"]


@contextlib.contextmanager
def serving(app, limits: RouterLimits) -> Iterator[str]:
    """`app` served by uvicorn as serve-router configures it, on a free loopback port, in a
    thread; its base URL. Stopped when the block ends."""
    server = uvicorn.Server(uvicorn_config(app, limits))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    thread = threading.Thread(target=asyncio.run, args=(server.serve(sockets=[sock]),))
    thread.start()
    try:
        wait_until(lambda: server.started or not thread.is_alive(), GUARD_S, "uvicorn serving")
        assert server.started
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(GUARD_S)
        sock.close()


def connect(url: str, receive_buffer: int | None = None) -> socket.socket:
    """A raw client connection to `url`, with a failure-guard timeout on every call."""
    client = socket.socket()
    if receive_buffer is not None:  # before connecting, so the window it advertises is small
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    client.settimeout(GUARD_S)
    client.connect(("127.0.0.1", int(url.rpartition(":")[2])))
    return client


def closed_by_the_server(client: socket.socket) -> bool:
    """Whether the server closed the connection (what it may still have sent is read first)."""
    try:
        while client.recv(65536):
            pass
    except ConnectionResetError:
        pass
    return True


def read_response(client: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response with a Content-Length: status, headers (lower-case names), body."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = client.recv(65536)
        assert chunk, f"the connection closed mid-response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (x.partition(":") for x in lines)}
    while len(body) < int(headers["content-length"]):
        chunk = client.recv(65536)
        assert chunk, f"the connection closed mid-body: {body!r}"
        body += chunk
    return int(status_line.split()[1]), headers, body


@pytest.fixture(scope="module")
def router(backend):
    limits = RouterLimits(header_timeout=BOUND_S, body_timeout=BOUND_S, send_timeout=BOUND_S)
    with serving(create_app(context_at(backend.url), limits), limits) as url:
        yield url


@pytest.mark.parametrize(
    ("answered_first", "sent"),
    [
        (False, b""),  # connected, and nothing more
        (False, b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Ty"),
        # After a response: uvicorn's own keep-alive timer stops at the first byte received.
        (True, b"GET /health HTTP/1.1\r\nHo"),
    ],
    ids=["nothing", "half the headers", "half the next headers"],
)
def test_a_client_slow_with_its_headers_is_disconnected(router, answered_first, sent):
    with connect(router) as slow:
        if answered_first:
            slow.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert read_response(slow)[0] == 200
        slow.sendall(sent)
        # Another connection is served meanwhile, then the slow one is closed by the server.
        assert httpx.post(f"{router}/v1/chat/completions", json=chat()).status_code == 200
        assert closed_by_the_server(slow)


def test_a_client_slow_with_its_body_gets_a_408_and_runs_nothing(router, backend):
    before = len(backend.requests)
    with connect(router) as slow:
        slow.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n" + b'{"model": "'
        )
        assert httpx.post(f"{router}/v1/chat/completions", json=chat()).status_code == 200
        status, headers, body = read_response(slow)
        assert status == 408 and headers["connection"] == "close"
        error = json.loads(body)["error"]
        assert error["code"] == "request_timeout" and "--body-timeout" in error["message"]
        assert closed_by_the_server(slow)
    assert len(backend.requests) == before + 6  # the other request's three steps, two models


def sending_buffer_bytes() -> int:
    """The most the kernel buffers on the sending side of a TCP connection that does not set its
    own (Linux's tcp_wmem maximum; 16 MiB elsewhere, more than any default)."""
    path = Path("/proc/sys/net/ipv4/tcp_wmem")
    return int(path.read_text().split()[2]) if path.exists() else 16 << 20


FLOOD_STEP_BYTES = 1 << 20


def flood(index: int, request: dict[str, Any]) -> Any:
    """The fake's fault hook: a question with "Flood" gets steps of a MiB each, more in all than
    the socket buffers hold, then its model request is held until the router closes it; other
    questions are answered as usual."""
    if "Flood" not in request["messages"][0]["content"]:
        return None
    steps_done = request["messages"][-1]["content"].count("\n\n")
    if steps_done > sending_buffer_bytes() // FLOOD_STEP_BYTES + 1:
        return "until_closed"
    return {"content": f"{'x' * FLOOD_STEP_BYTES} {steps_done}\n\n"}


def test_a_stream_nobody_reads_is_cut_off_and_its_run_stopped():
    limits = RouterLimits(send_timeout=BOUND_S)
    with fake_model_server(fault=flood) as server:
        context = context_at(server.url, token_budget=1000, max_steps=100, threshold=1e9)
        with serving(create_app(context, limits), limits) as url:
            body = json.dumps(chat("Flood me", stream=True)).encode()
            with connect(url, receive_buffer=4096) as stalled:
                stalled.sendall(
                    b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    b"Content-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
                )
                wait_until(lambda: server.requests, GUARD_S, "the stream's first model request")
                # It never reads; another client is served meanwhile.
                reply = httpx.post(f"{url}/v1/chat/completions", json=chat(), timeout=GUARD_S)
                assert reply.status_code == 200
                # The run is stopped: it would otherwise wait forever on its held model request.
                wait_until(
                    lambda: httpx.get(f"{url}/health").json()["running"] == 0,
                    GUARD_S,
                    "the stalled stream's run stopped",
                )
                finished = httpx.get(f"{url}/metrics").text
                assert 'glimprouter_chains_finished_total{stop_reason="end_of_sequence"} 1.0' in (
                    finished
                )  # the other client's chain only
                assert closed_by_the_server(stalled)


def hold_second_steps(index: int, request: dict[str, Any]) -> Any:
    """The fake's fault hook: a question with "Hold" gets its first step, then its next model
    request is held until the router closes it."""
    held = "Hold" in request["messages"][0]["content"]
    return "until_closed" if held and "\n\n" in request["messages"][-1]["content"] else None


def test_a_key_at_its_bound_waits_while_another_key_streams():
    limits = RouterLimits(max_requests_per_key=1)
    with fake_model_server(fault=hold_second_steps) as server:
        app = create_app(context_at(server.url, threshold=1e9), limits, api_keys=ApiKeys(KEYS))
        with serving(app, limits) as url, httpx.Client(base_url=url, timeout=GUARD_S) as http:

            def open_stream(key: str, question: str = "Hold on") -> Any:
                request = http.build_request(
                    "POST",
                    "/v1/chat/completions",
                    json=chat(question, stream=True),
                    headers={"Authorization": f"Bearer {key}"},
                )
                return http.send(request, stream=True)

            first = open_stream(KEYS[0])
            lines = first.iter_lines()  # kept: a discarded iterator closes the response
            assert first.status_code == 200 and next(lines).startswith("data: ")
            other_key = open_stream(KEYS[1])
            assert other_key.status_code == 200
            # The first key's next request, streaming or not, waits for its place.
            whole: list[httpx.Response] = []
            waiter = threading.Thread(
                target=lambda: whole.append(
                    httpx.post(
                        f"{url}/v1/chat/completions",
                        json=chat(),
                        headers={"Authorization": f"Bearer {KEYS[0]}"},
                        timeout=GUARD_S,
                    )
                )
            )
            waiter.start()
            wait_until(lambda: http.get("/health").json()["waiting"] == 1, GUARD_S, "it waits")
            assert not whole
            first.close()
            # Its run stopped (its held model request closed), its place went to the waiter.
            waiter.join(GUARD_S)
            assert whole[0].status_code == 200
            other_key.close()
            wait_until(
                lambda: http.get("/health").json()["running"] == 0,
                GUARD_S,
                "every stream's run stopped",
            )


async def test_a_flood_beyond_the_waiting_queue_gets_429_at_once():
    gate = threading.Event()  # model requests are answered once the test opens it

    def held(index: int, request: dict[str, Any]) -> None:
        gate.wait(GUARD_S)

    with fake_model_server(fault=held) as server:
        limits = RouterLimits(max_concurrency=1, max_waiting=1)
        app = create_app(context_at(server.url), limits)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://router") as http:

            async def health() -> dict[str, Any]:
                return (await http.get("/health")).json()

            try:
                post = http.post("/v1/chat/completions", json=chat(), timeout=GUARD_S)
                running = asyncio.ensure_future(post)
                await wait_until_async(lambda: server.requests, GUARD_S, "the first chain running")
                waiting = asyncio.ensure_future(
                    http.post("/v1/chat/completions", json=chat(), timeout=GUARD_S)
                )
                deadline = asyncio.get_running_loop().time() + GUARD_S
                while (await health())["waiting"] != 1:
                    assert asyncio.get_running_loop().time() < deadline, "no chain waiting"
                    await asyncio.sleep(0.02)
                requests_before = len(server.requests)
                refused = await http.post(
                    "/v1/chat/completions", json=chat(stream=True), timeout=GUARD_S
                )
                assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
                error = refused.json()["error"]
                assert (error["type"], error["code"]) == ("requests", "rate_limit_exceeded")
                assert "--max-waiting" in error["message"]
                assert len(server.requests) == requests_before, "a refused chain ran"
            finally:
                gate.set()
            replies = await asyncio.gather(running, waiting)
            assert [reply.status_code for reply in replies] == [200, 200]
            assert await health() == {"status": "ok", "running": 0, "waiting": 0, "peak_running": 1}
            exposition = (await http.get("/metrics")).text
            assert re.search(
                r'glimprouter_http_requests_total\{code="429",route="/v1/chat/completions"\} 1.0',
                exposition,
            ), exposition


@pytest.mark.parametrize(
    "content_type",
    [
        None,  # a browser's fetch of a Blob: no preflight, no type
        "text/plain",
        "text/plain;charset=UTF-8",
        "application/x-www-form-urlencoded",  # curl -d, an HTML form
        "multipart/form-data; boundary=x",
        "application/jsonx",
    ],
)
def test_a_body_not_sent_as_json_gets_a_415_and_runs_nothing(backend, content_type):
    with TestClient(create_app(context_at(backend.url))) as client:
        before = len(backend.requests)
        headers = {} if content_type is None else {"Content-Type": content_type}
        reply = client.post(
            "/v1/chat/completions", content=json.dumps(chat()).encode(), headers=headers
        )
        assert reply.status_code == 415, reply.text
        error = reply.json()["error"]
        assert error["code"] == "unsupported_media_type"
        assert "application/json" in error["message"]
        assert len(backend.requests) == before
        as_json = {"Content-Type": "Application/JSON; charset=utf-8"}
        accepted = client.post("/v1/chat/completions", content=json.dumps(chat()), headers=as_json)
        assert accepted.status_code == 200


def test_a_foreign_host_is_refused_on_loopback(backend):
    hosts = answered_hosts("127.0.0.1", ["Router.example"])
    with TestClient(create_app(context_at(backend.url), hosts=hosts)) as client:
        for host in ("localhost:8000", "127.0.0.1", "[::1]:8000", "router.example:443"):
            assert client.get("/v1/models", headers={"Host": host}).status_code == 200, host
        for host in ("attacker.example", "attacker.example:8000", "127.0.0.1.attacker.example"):
            refused = client.get("/v1/models", headers={"Host": host})
            assert refused.status_code == 400, host
            error = refused.json()["error"]
            assert error["code"] == "invalid_host" and "--allowed-host" in error["message"]
        exposition = client.get("/metrics", headers={"Host": "localhost"}).text
        assert 'glimprouter_http_requests_total{code="400",route="/v1/models"} 3.0' in exposition


def test_which_hosts_are_answered():
    assert answered_hosts("::1") == {"localhost", "127.0.0.1", "[::1]"}
    assert answered_hosts("localhost", ["a.example"]) == {
        "localhost",
        "127.0.0.1",
        "[::1]",
        "a.example",
    }
    assert answered_hosts("0.0.0.0") is None  # elsewhere, any, unless told
    assert answered_hosts("10.0.0.7", ["A.example"]) == {"a.example"}
    assert [host_name(h) for h in ("[::1]:80", "LocalHost:1", "x", " 127.0.0.1 ")] == [
        "[::1]", "localhost", "x", "127.0.0.1",
    ]  # fmt: skip


def test_the_bounds_are_serve_router_flags_checked_at_startup(backend):
    args = build_parser().parse_args(
        ["serve-router", "--max-concurrency", "2", "--max-waiting", "3", "--header-timeout",
         "0.5", "--allowed-host", "a.example", "--allowed-host", "b.example"]
    )  # fmt: skip
    assert (args.max_concurrency, args.max_waiting, args.header_timeout) == (2, 3, 0.5)
    assert (args.body_timeout, args.send_timeout, args.max_requests_per_key) == (30.0, 30.0, 8)
    # The flag's name before it counted every request, not only streams.
    old_name = build_parser().parse_args(["serve-router", "--max-streams-per-key", "5"])
    assert old_name.max_requests_per_key == 5
    assert args.allowed_host == ["a.example", "b.example"]
    for limits, needle in [
        (RouterLimits(max_concurrency=1, max_waiting=-1), "--max-waiting -1 must be at least 0"),
        (RouterLimits(header_timeout=0), "--header-timeout 0 must be above 0"),
        (RouterLimits(max_requests_per_key=0), "--max-requests-per-key 0 must be at least 1"),
    ]:
        with pytest.raises(ConfigError, match=needle):
            create_app(context_at(backend.url), limits)
