"""A TCP proxy in front of a real model server: it records every HTTP request passing through
and can die (every connection cut at once, the port closed) and come back on the same port, as a
killed and restarted server does."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from typing import Any


class KillableProxy:
    """Forward 127.0.0.1:`port` to `target_port`; `url` is the proxied base URL."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.requests: list[dict[str, Any]] = []
        self._sent: list[bytearray] = []
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.AbstractServer | None = None
        self._loop = asyncio.new_event_loop()
        threading.Thread(target=self._loop.run_forever, daemon=True).start()
        self.start()

    def start(self) -> None:
        """Listen (again) on the same port."""
        self._call(self._listen())

    def kill(self) -> None:
        """Stop listening and cut every open connection mid-flight."""
        self._call(self._die())

    def close(self) -> None:
        self.kill()
        self._loop.call_soon_threadsafe(self._loop.stop)

    def chat_requests(self) -> list[dict[str, Any]]:
        """The JSON bodies of every chat completion request seen so far."""
        bodies = []
        for stream in self._sent:
            bodies.extend(_http_bodies(bytes(stream)))
        return [body for body in bodies if "messages" in body]

    def _call(self, work) -> None:
        asyncio.run_coroutine_threadsafe(work, self._loop).result(timeout=30)

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

    async def _relay(self, client_reader, client_writer) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection(
                "127.0.0.1", self.target_port
            )
        except OSError:
            client_writer.transport.abort()
            return
        sent = bytearray()
        self._sent.append(sent)
        self._writers |= {client_writer, server_writer}

        async def pipe(reader, writer, record: bytearray | None) -> None:
            try:
                while data := await reader.read(65536):
                    if record is not None:
                        record.extend(data)
                    writer.write(data)
                    await writer.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                writer.transport.abort()

        await asyncio.gather(
            pipe(client_reader, server_writer, sent), pipe(server_reader, client_writer, None)
        )


def _http_bodies(stream: bytes) -> list[dict[str, Any]]:
    """JSON bodies of the HTTP/1.1 requests in one connection's client-to-server bytes."""
    bodies, position = [], 0
    while (end := stream.find(b"\r\n\r\n", position)) >= 0:
        headers = stream[position:end].decode("latin-1").lower().split("\r\n")
        length = next(
            (int(h.split(":", 1)[1]) for h in headers if h.startswith("content-length:")), 0
        )
        body = stream[end + 4 : end + 4 + length]
        if len(body) < length:
            break
        if length:
            try:
                bodies.append(json.loads(body))
            except ValueError:
                pass
        position = end + 4 + length
    return bodies
