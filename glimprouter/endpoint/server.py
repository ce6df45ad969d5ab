"""The process side: check the model servers, bind the socket, run uvicorn."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterable
from pathlib import Path

import uvicorn
from starlette.applications import Starlette

from glimprouter.endpoint.app import create_app
from glimprouter.endpoint.connections import bounded_protocol
from glimprouter.endpoint.hosts import answered_hosts
from glimprouter.endpoint.keys import ApiKeys, check_exposure
from glimprouter.endpoint.limits import DEFAULT_MODEL_NAME, RouterLimits
from glimprouter.errors import ConfigError
from glimprouter.graph.context import RouterContext
from glimprouter.model_servers.client import check_endpoints


def serve_router(
    base_context: RouterContext,
    limits: RouterLimits | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    served_model_name: str = DEFAULT_MODEL_NAME,
    task: str = "math",
    api_keys: ApiKeys | None = None,
    allow_unauthenticated: bool = False,
    open_metrics: bool = False,
    checkpoint_db: str | Path | None = None,
    allowed_hosts: Iterable[str] = (),
) -> None:
    """Check both model servers, then serve the endpoint until interrupted; prints one line with
    the base URL once it accepts requests. Without `api_keys` only a loopback `host` is served,
    unless `allow_unauthenticated`. On a loopback `host` a request must name a loopback Host or
    one of `allowed_hosts`; elsewhere one of `allowed_hosts` when given."""
    api_keys = api_keys or ApiKeys()
    check_exposure(host, api_keys, allow_unauthenticated)
    limits = limits or RouterLimits()
    app = create_app(
        base_context,
        limits,
        served_model_name=served_model_name,
        task=task,
        api_keys=api_keys,
        open_metrics=open_metrics,
        checkpoint_db=checkpoint_db,
        hosts=answered_hosts(host, allowed_hosts),
    )
    config = uvicorn_config(app, limits)
    asyncio.run(_serve(config, base_context, host, port, served_model_name, len(api_keys)))


def uvicorn_config(app: Starlette, limits: RouterLimits) -> uvicorn.Config:
    """How uvicorn serves the app: slow clients bounded by `limits` on every connection."""
    return uvicorn.Config(
        app,
        http=bounded_protocol(limits.header_timeout, limits.send_timeout),
        # A slow chain of thought must not hold Ctrl-C for minutes: in-flight runs get a few
        # seconds.
        timeout_graceful_shutdown=5,
    )


async def _serve(
    config: uvicorn.Config,
    base_context: RouterContext,
    host: str,
    port: int,
    served_model_name: str,
    keys: int,
) -> None:
    await check_endpoints(base_context)
    # Our own socket: a taken port is one line naming the flag, and --port 0 picks a free one.
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise ConfigError(
            f"cannot listen on {host}:{port} ({error.strerror}): choose another --port or --host"
        ) from None
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started and not serving.done():
        await asyncio.sleep(0.05)
    if server.started:
        shown = f"[{host}]" if ":" in host else host
        print(
            f"serving {served_model_name!r} at http://{shown}:{sock.getsockname()[1]}/v1 "
            f"(small: {base_context.shown_url('small')}, large: {base_context.shown_url('large')}; "
            + (f"{keys} API key{'s' if keys > 1 else ''})" if keys else "no API key)"),
            flush=True,
        )
    await serving
