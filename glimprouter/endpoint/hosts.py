"""Which Host a request may name: on a loopback address only the loopback names (and any
--allowed-host), so that a web page whose own name was rebound to 127.0.0.1 (DNS rebinding)
cannot reach the endpoint from a browser on this machine."""

from __future__ import annotations

from collections.abc import Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

from glimprouter.endpoint.errors import RequestError
from glimprouter.endpoint.keys import is_loopback

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "[::1]"})


def answered_hosts(host: str, allowed: Iterable[str] = ()) -> frozenset[str] | None:
    """The Host names a server listening on `host` answers (any port): on loopback the loopback
    names and `allowed`; elsewhere `allowed` when given, else any (None)."""
    names = frozenset(name.lower() for name in allowed)
    if is_loopback(host):
        return LOOPBACK_NAMES | names
    return names or None


def host_name(header: str) -> str:
    """The name in a Host header, without its port ("[::1]:8000" -> "[::1]")."""
    header = header.strip().lower()
    if header.startswith("["):
        return header.partition("]")[0] + "]"
    return header.partition(":")[0]


class RequireHost:
    """ASGI middleware: a request whose Host is not one of `hosts` gets an OpenAI-shaped 400
    (Starlette's TrustedHostMiddleware answers in plain text)."""

    def __init__(self, app: ASGIApp, hosts: frozenset[str] | None) -> None:
        self.app = app
        self.hosts = hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.hosts is not None:
            header = dict(scope["headers"]).get(b"host", b"").decode("latin-1")
            if host_name(header) not in self.hosts:
                refusal = RequestError(
                    400,
                    f"this server does not answer for the host {header!r}: add it with "
                    "serve-router --allowed-host",
                    code="invalid_host",
                )
                await refusal.response()(scope, receive, send)
                return
        await self.app(scope, receive, send)
