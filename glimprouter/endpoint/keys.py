"""API keys: who may use the endpoint. Requests under /v1 need `Authorization: Bearer KEY` with
one of the server's keys, else an OpenAI-shaped 401 and nothing runs; /health and /openapi.json
stay open (a load balancer's probe, a client generator), and /metrics when told. Keys are
compared in constant time and never logged, echoed or kept in plain text: the server holds their
SHA-256 digests only."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from glimprouter.endpoint.errors import RequestError
from glimprouter.errors import ConfigError

if TYPE_CHECKING:  # serve-router's flags (KEYS_ENV) are read without the [serve] extra
    from starlette.types import ASGIApp, Receive, Scope, Send

KEYS_ENV = "GLIMPROUTER_ROUTER_API_KEYS"  # comma-separated
OPEN_PATHS = frozenset({"/health", "/openapi.json"})


class ApiKeys:
    """The keys a request may present (none: the endpoint is open)."""

    def __init__(self, keys: Iterable[str] = ()) -> None:
        self._digests = [_digest(key.strip()) for key in keys if key.strip()]

    def __len__(self) -> int:
        return len(self._digests)

    def admits(self, authorization: str | None) -> bool:
        """Whether an Authorization header carries one of the keys (scheme Bearer, any case)."""
        return self.digest_of(authorization) is not None

    def digest_of(self, authorization: str | None) -> bytes | None:
        """The digest of the key an Authorization header carries, if it is one of the keys: what
        the server tells its clients apart by."""
        scheme, _, credential = (authorization or "").strip().partition(" ")
        candidate = _digest(credential.strip())
        # Every key is compared, so the time taken says nothing about which one came close.
        matches = [hmac.compare_digest(candidate, digest) for digest in self._digests]
        return candidate if scheme.lower() == "bearer" and any(matches) else None


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


def keys_from(values: list[str] | None, files: list[Path] | None) -> ApiKeys:
    """The keys of --api-key, --api-key-file (one key per line; # starts a comment) and
    GLIMPROUTER_ROUTER_API_KEYS."""
    keys = [*(values or []), *os.environ.get(KEYS_ENV, "").split(",")]
    for path in files or []:
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as error:
            raise ConfigError(
                f"cannot read the API keys in {path} ({error}): check --api-key-file"
            ) from None
        found = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
        if not found:
            raise ConfigError(f"{path} holds no API key: check --api-key-file")
        keys += found
    return ApiKeys(keys)


def check_exposure(host: str, keys: ApiKeys, allow_unauthenticated: bool) -> None:
    """Refuse to serve a non-loopback address with no key, unless told to."""
    if keys or allow_unauthenticated or is_loopback(host):
        return
    raise ConfigError(
        f"serve-router would listen on {host} with no API key, open to anyone who reaches it: "
        f"give --api-key, --api-key-file or {KEYS_ENV}, or --allow-unauthenticated"
    )


def is_loopback(host: str) -> bool:
    """Whether `host` (an address, or localhost) is this machine's loopback."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


class RequireKey:
    """ASGI middleware: a request to a closed path without a valid key gets a 401; one with a
    key carries its digest as the request's state `api_key`."""

    def __init__(
        self, app: ASGIApp, keys: ApiKeys, open_paths: frozenset[str] = OPEN_PATHS
    ) -> None:
        self.app = app
        self.keys = keys
        self.open_paths = open_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.keys and scope["path"] not in self.open_paths:
            headers = dict(scope["headers"])
            authorization = headers.get(b"authorization", b"").decode("latin-1")
            digest = self.keys.digest_of(authorization)
            scope.setdefault("state", {})["api_key"] = digest
            if digest is None:
                refusal = RequestError(
                    401,
                    "a valid API key is required: send it as 'Authorization: Bearer KEY' (the "
                    "OpenAI SDKs' api_key)",
                    code="invalid_api_key",
                )
                response = refusal.response()
                response.headers["WWW-Authenticate"] = "Bearer"
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
