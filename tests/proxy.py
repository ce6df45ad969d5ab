"""A TCP proxy in front of a real model server, for tests that must not depend on its speed.

It records every chat request passing through (but the start-up check's) and can:
- die (every connection cut at once, the port closed) and come back on the same port, as a
  killed and restarted server does; `cut_response` makes it die in the middle of one streamed
  reply, after a given number of its events and before the one that says how it ended, so "killed
  mid-step" holds by construction on any machine;
- hold requests (`hold`) until released, or until a number of them wait together (a barrier), so
  "all in flight at once" and "killed before the chain ends" hold by construction too;
- delay every chunk the server sends back (`chunk_delay_s`): a slow model, at will.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from glimprouter.model_servers.client import CANARY_QUESTION

# (1-based number of the chat request among all seen, its JSON body) -> hold it?
HoldRule = Callable[[int, dict[str, Any]], bool]


@dataclass
class _Cut:
    request_number: int
    after_events: int


class KillableProxy:
    """Forward 127.0.0.1:`port` to `target_port`; `url` is the proxied base URL."""

    def __init__(self, target_port: int, *, chunk_delay_s: float = 0.0) -> None:
        self.target_port = target_port
        self.chunk_delay_s = chunk_delay_s
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self._bodies: list[dict[str, Any]] = []
        self._seen = threading.Condition()
        self.died = threading.Event()
        """Set when the proxy died, by `kill` or by a `cut_response`."""
        self._cut: _Cut | None = None
        self._hold_rule: HoldRule | None = None
        self._barrier: int | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.AbstractServer | None = None
        self._loop = asyncio.new_event_loop()
        self._released = asyncio.Event()
        self._held: set[asyncio.StreamWriter] = set()  # clients of the requests on hold
        threading.Thread(target=self._loop.run_forever, daemon=True).start()
        self.start()

    # --- control, from the test's thread ------------------------------------------------------

    def start(self) -> None:
        """Listen (again) on the same port."""
        self.died.clear()
        self._call(self._listen())

    def kill(self) -> None:
        """Stop listening and cut every open connection mid-flight."""
        self._call(self._die())

    def close(self) -> None:
        """Die, and end every relay before the proxy's loop stops (none is left pending)."""
        self.release()
        self._call(self._close())
        self._loop.call_soon_threadsafe(self._loop.stop)

    def cut_response(self, request_number: int, after_events: int) -> None:
        """Die while relaying the reply to chat request `request_number` (1-based, counting every
        chat request through this proxy): after `after_events` server-sent events, or just before
        an event that carries a finish reason, whichever comes first."""
        self._cut = _Cut(request_number, after_events)

    def hold(self, rule: HoldRule) -> None:
        """Hold every chat request for which `rule(number, body)` is true until `release`."""
        self._call(self._set_hold(rule, None))

    def hold_until_together(self, count: int) -> None:
        """Hold the next chat requests until `count` of them wait at once, then let all through
        (and every later one): whoever sends them must have them in flight together."""
        self._call(self._set_hold(lambda number, body: True, count))

    def release(self) -> None:
        """Let held requests, and later ones, through."""
        self._loop.call_soon_threadsafe(self._released.set)

    def chat_requests(self) -> list[dict[str, Any]]:
        """The JSON bodies of every chat completion request seen so far, in order."""
        with self._seen:
            return list(self._bodies)

    def wait_for_chat_requests(self, count: int, timeout_s: float) -> list[dict[str, Any]]:
        """Block until `count` chat requests were seen; fail at the deadline."""
        with self._seen:
            if not self._seen.wait_for(lambda: len(self._bodies) >= count, timeout_s):
                raise AssertionError(
                    f"the proxy saw {len(self._bodies)} chat requests, not {count}, "
                    f"within {timeout_s:g} s"
                )
            return list(self._bodies)

    def held(self) -> int:
        """Requests waiting in a hold right now, whose client still waits for them (a client
        whose connection died, say one the server closed as idle, sends its request again)."""
        return sum(not client.is_closing() for client in list(self._held))

    def _call(self, work) -> None:
        asyncio.run_coroutine_threadsafe(work, self._loop).result(timeout=30)

    # --- the proxy, on its own event loop -----------------------------------------------------

    async def _set_hold(self, rule: HoldRule, barrier: int | None) -> None:
        self._released.clear()
        self._hold_rule, self._barrier = rule, barrier

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(
            self._relay, "127.0.0.1", self.port, reuse_address=True
        )

    async def _die(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()
        self.died.set()

    async def _close(self) -> None:
        await self._die()
        relays = asyncio.all_tasks() - {asyncio.current_task()}
        for relay in relays:
            relay.cancel()
        await asyncio.gather(*relays, return_exceptions=True)

    async def _relay(self, client_reader, client_writer) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection(
                "127.0.0.1", self.target_port
            )
        except OSError:
            client_writer.transport.abort()
            return
        self._writers |= {client_writer, server_writer}
        current: list[int] = [0]  # the chat request this connection carries now (HTTP/1.1)
        await asyncio.gather(
            self._requests(client_reader, server_writer, client_writer, current),
            self._responses(server_reader, client_writer, current),
        )

    async def _requests(self, reader, writer, client, current: list[int]) -> None:
        """Client to server, one whole request at a time, so that one can be held."""
        buffer = b""
        try:
            while data := await reader.read(65536):
                buffer += data
                while (request := _split_request(buffer)) is not None:
                    raw, buffer = request
                    await self._forward_request(raw, writer, client, current)
        except (ConnectionError, OSError):
            pass
        finally:
            writer.transport.abort()

    async def _forward_request(self, raw: bytes, writer, client, current: list[int]) -> None:
        body = _json_body(raw)
        if body is not None and "messages" in body and not _is_canary(body):
            with self._seen:
                self._bodies.append(body)
                number = len(self._bodies)
                self._seen.notify_all()
            current[0] = number
            if self._hold_rule is not None and not self._released.is_set():
                if self._hold_rule(number, body):
                    self._held.add(client)
                    if self._barrier is not None and self.held() >= self._barrier:
                        self._released.set()
                    try:
                        await self._released.wait()
                    finally:
                        self._held.discard(client)
        else:
            current[0] = 0
        writer.write(raw)
        await writer.drain()

    async def _responses(self, reader, writer, current: list[int]) -> None:
        """Server to client: passed on as it comes, but for a reply that is to be cut."""
        try:
            while data := await reader.read(65536):
                cut = self._cut
                if cut is not None and current[0] == cut.request_number:
                    await self._relay_until_cut(data, reader, writer, cut)
                    return
                if self.chunk_delay_s:
                    await asyncio.sleep(self.chunk_delay_s)
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.transport.abort()

    async def _relay_until_cut(self, data: bytes, reader, writer, cut: _Cut) -> None:
        """Relay whole HTTP chunks of an event stream until the cut, then die."""
        buffer, head_done, events = data, False, 0
        while True:
            if not head_done:
                end = buffer.find(b"\r\n\r\n")
                if end >= 0:
                    head = buffer[: end + 4]
                    writer.write(head)
                    buffer, head_done = buffer[end + 4 :], True
                    if b"transfer-encoding: chunked" not in head.lower():
                        events = cut.after_events  # not a stream: cut it right after its head
            while head_done and (chunk := _split_chunk(buffer)) is not None:
                raw, buffer = chunk
                if events >= cut.after_events or b'"finish_reason":"' in raw:
                    await writer.drain()
                    self._cut = None
                    await self._die()
                    return
                events += raw.count(b"data: ")
                writer.write(raw)
            await writer.drain()
            more = await reader.read(65536)
            if not more:
                return
            buffer += more


def _is_canary(body: dict[str, Any]) -> bool:
    """Whether a chat request is the start-up check's (`check_endpoints`), which every command
    makes before its first chain: it is passed on, neither counted nor held."""
    messages = body["messages"]
    return (
        bool(messages)
        and isinstance(messages[0], dict)
        and (messages[0].get("content") == CANARY_QUESTION)
    )


def _split_request(buffer: bytes) -> tuple[bytes, bytes] | None:
    """(one whole HTTP/1.1 request, the rest), or None while it is incomplete."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return None
    headers = buffer[:end].decode("latin-1").lower().split("\r\n")
    length = next((int(h.split(":", 1)[1]) for h in headers if h.startswith("content-length:")), 0)
    total = end + 4 + length
    if len(buffer) < total:
        return None
    return buffer[:total], buffer[total:]


def _json_body(raw: bytes) -> dict[str, Any] | None:
    body = raw[raw.find(b"\r\n\r\n") + 4 :]
    if not body:
        return None
    try:
        parsed = json.loads(body)
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


def _split_chunk(buffer: bytes) -> tuple[bytes, bytes] | None:
    """(one whole chunk of a chunked body, size line included, the rest), or None."""
    line_end = buffer.find(b"\r\n")
    if line_end < 0:
        return None
    size = int(buffer[:line_end].split(b";")[0], 16)
    total = line_end + 2 + size + 2
    if len(buffer) < total:
        return None
    return buffer[:total], buffer[total:]
