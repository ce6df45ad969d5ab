"""Slow clients at the connection, where the app cannot see them: a deadline on a request's
headers, and on a reply that a client does not read.

uvicorn (0.54) has neither: before a connection's first request it arms no timer at all, and its
keep-alive timer restarts on every byte received, so a client that sends its headers a byte at a
time holds a connection forever (Slowloris); a reply's writes wait on the client as long as it
keeps its connection open without reading. Both are bounded here by a small subclass of
uvicorn's h11 protocol (h11 is a dependency of uvicorn; httptools, which uvicorn prefers when it
is installed, is not), hooked where h11 already reports what happens: a request's headers are in
when the protocol starts a new request cycle, and the transport calls `pause_writing` when its
write buffer is full because the client reads nothing, `resume_writing` once it reads again.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger(__name__)


class BoundedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, with `header_timeout` seconds for a request's headers (from the
    connection, or the previous response) and `send_timeout` seconds a full write buffer may
    wait on the client; past either, the connection is closed."""

    def __init__(self, *args: Any, header_timeout: float, send_timeout: float, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.header_timeout = header_timeout
        self.send_timeout = send_timeout
        self._header_deadline: asyncio.TimerHandle | None = None
        self._send_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_deadline()

    def handle_events(self) -> None:
        cycle = self.cycle
        super().handle_events()
        if self.cycle is not cycle:  # a request's headers are in: the app reads the rest
            self._disarm("_header_deadline")

    def on_response_complete(self) -> None:
        # Before the protocol starts a request that was pipelined behind this one.
        self._arm_header_deadline()
        super().on_response_complete()

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._send_deadline is None:
            self._send_deadline = self.loop.call_later(self.send_timeout, self._stalled)

    def resume_writing(self) -> None:
        super().resume_writing()
        self._disarm("_send_deadline")

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm("_header_deadline")
        self._disarm("_send_deadline")
        super().connection_lost(exc)

    def _arm_header_deadline(self) -> None:
        self._disarm("_header_deadline")
        self._header_deadline = self.loop.call_later(self.header_timeout, self._too_slow)

    def _disarm(self, deadline: str) -> None:
        timer = getattr(self, deadline)
        if timer is not None:
            timer.cancel()
            setattr(self, deadline, None)

    def _too_slow(self) -> None:
        log.info(
            "closed a connection from %s that sent no whole request headers within %g s "
            "(--header-timeout)",
            _shown(self.client),
            self.header_timeout,
        )
        self.transport.close()

    def _stalled(self) -> None:
        log.warning(
            "closed a connection from %s that read nothing of its reply for %g s "
            "(--send-timeout); its run is stopped",
            _shown(self.client),
            self.send_timeout,
        )
        # Not close(): that would wait to write the buffer to a client that does not read. The
        # app sees the client gone, as when it leaves, and stops its run.
        self.transport.abort()


def bounded_protocol(header_timeout: float, send_timeout: float) -> Callable[..., Any]:
    """The protocol for uvicorn's `http` setting, with these bounds: a partial, which pickles
    into the worker processes of --workers where a class made on the fly would not."""
    return functools.partial(
        BoundedH11Protocol, header_timeout=header_timeout, send_timeout=send_timeout
    )


def _shown(client: tuple[str, int] | None) -> str:
    return f"{client[0]}:{client[1]}" if client else "an unknown client"
