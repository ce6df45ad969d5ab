"""The process side: check the model servers, bind the socket, run uvicorn: in this process, or
in N worker processes that share the socket (uvicorn's own supervisor, which replaces a worker
that dies)."""

from __future__ import annotations

import asyncio
import functools
import glob
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import uvicorn
from prometheus_client.multiprocess import mark_process_dead
from starlette.applications import Starlette
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors.multiprocess import Multiprocess

from glimprouter.endpoint.admission import shared_scheduler
from glimprouter.endpoint.app import create_app, scheduler
from glimprouter.endpoint.connections import bounded_protocol
from glimprouter.endpoint.hosts import answered_hosts
from glimprouter.endpoint.keys import ApiKeys, check_exposure
from glimprouter.endpoint.limits import DEFAULT_MODEL_NAME, RouterLimits
from glimprouter.endpoint.metrics import MULTIPROCESS_DIR_ENV
from glimprouter.errors import ConfigError
from glimprouter.graph.context import RouterContext
from glimprouter.graph.threads import DEFAULT_MAX_THREAD_CHECKPOINTS
from glimprouter.model_servers.client import check_endpoints
from glimprouter.stopping import die_with_parent

# A slow chain of thought must not hold Ctrl-C for minutes: in-flight runs get a few seconds.
GRACEFUL_SHUTDOWN_SECONDS = 5
# How long a worker may leave the supervisor's ping unanswered before it is replaced. uvicorn's
# 5 s is shorter than a new worker's imports on a busy machine, which made the supervisor kill
# every replacement before it had started.
WORKER_HEALTHCHECK_SECONDS = 60


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
    thread_ttl: float | None = None,
    max_thread_checkpoints: int | None = DEFAULT_MAX_THREAD_CHECKPOINTS,
    allowed_hosts: Iterable[str] = (),
    workers: int = 1,
) -> None:
    """Check both model servers, then serve the endpoint until interrupted; prints one line with
    the base URL once it accepts requests. Without `api_keys` only a loopback `host` is served,
    unless `allow_unauthenticated`. On a loopback `host` a request must name a loopback Host or
    one of `allowed_hosts`; elsewhere one of `allowed_hosts` when given. With `workers` > 1,
    that many processes serve the one port (each with its own `limits.max_concurrency`;
    /metrics sums them all)."""
    if workers < 1:
        raise ConfigError(f"--workers {workers} must be at least 1")
    api_keys = api_keys or ApiKeys()
    check_exposure(host, api_keys, allow_unauthenticated)
    limits = limits or RouterLimits()
    app_factory = functools.partial(
        create_app,
        base_context,
        limits,
        served_model_name=served_model_name,
        task=task,
        api_keys=api_keys,
        open_metrics=open_metrics,
        checkpoint_db=checkpoint_db,
        thread_ttl=thread_ttl,
        max_thread_checkpoints=max_thread_checkpoints,
        hosts=answered_hosts(host, allowed_hosts),
    )
    app = app_factory()  # a bad setting fails here, in one line, rather than in every worker
    asyncio.run(check_endpoints(base_context))
    sock = _bind(host, port)
    keys = len(api_keys)
    shown = f"[{host}]" if ":" in host else host
    ready = (
        f"serving {served_model_name!r} at http://{shown}:{sock.getsockname()[1]}/v1 "
        f"(small: {base_context.shown_url('small')}, large: {base_context.shown_url('large')}; "
        + (f"{keys} API key{'s' if keys > 1 else ''}" if keys else "no API key")
        + (f"; {workers} workers)" if workers > 1 else ")")
    )
    if workers == 1:
        asyncio.run(_serve(uvicorn_config(app, limits), sock, lambda: print(ready, flush=True)))
    else:
        _serve_workers(app_factory, limits, sock, workers, lambda: print(ready, flush=True))


def uvicorn_config(app: Any, limits: RouterLimits, **options: Any) -> uvicorn.Config:
    """How uvicorn serves the app (or, with factory=True, a worker's app factory): slow clients
    bounded by `limits` on every connection."""
    return uvicorn.Config(
        app,
        http=bounded_protocol(limits.header_timeout, limits.send_timeout),
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        **options,
    )


def _bind(host: str, port: int) -> socket.socket:
    """Our own socket: a taken port is one line naming the flag, and --port 0 picks a free one."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise ConfigError(
            f"cannot listen on {host}:{port} ({error.strerror}): choose another --port or --host"
        ) from None
    return sock


async def _serve(config: uvicorn.Config, sock: socket.socket, on_ready: Callable[[], None]) -> None:
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started and not serving.done():
        await asyncio.sleep(0.05)
    if server.started:
        on_ready()
    await serving


def _serve_workers(
    app_factory: Callable[[], Starlette],
    limits: RouterLimits,
    sock: socket.socket,
    workers: int,
    on_ready: Callable[[], None],
) -> None:
    """Serve from `workers` processes until SIGINT or SIGTERM, with the metrics in
    PROMETHEUS_MULTIPROC_DIR (a directory of ours unless the variable names one)."""
    given = os.environ.get(MULTIPROCESS_DIR_ENV)
    directory = given or tempfile.mkdtemp(prefix="glimprouter-metrics-")
    # prometheus-client's rule: the directory starts empty, or old runs' counts add up.
    for stale in glob.glob(os.path.join(directory, "*.db")):
        os.remove(stale)
    os.environ[MULTIPROCESS_DIR_ENV] = directory  # the workers, spawned, import with it set
    try:
        with shared_scheduler(scheduler(limits)) as scheduler_socket:
            worker_factory = functools.partial(app_factory, scheduler_socket=scheduler_socket)
            config = uvicorn_config(
                functools.partial(_worker_app, os.getpid(), worker_factory),
                limits,
                factory=True,
                workers=workers,
                timeout_worker_healthcheck=WORKER_HEALTHCHECK_SECONDS,
            )
            supervisor = _Workers(config, [sock], on_ready)
            supervisor.run()
    finally:
        if not given:
            os.environ.pop(MULTIPROCESS_DIR_ENV)
            shutil.rmtree(directory, ignore_errors=True)
    if supervisor.failed_to_start:
        raise ConfigError(
            "a router worker failed to start (its error is above): fix it, or run with "
            "--workers 1 to see it alone"
        )


def _worker_app(supervisor: int, app_factory: Callable[[], Starlette]) -> Starlette:
    """A worker's app; the worker stops when its supervisor dies, even by SIGKILL, rather than
    serve on unsupervised."""
    if hook := die_with_parent(supervisor):
        hook()
    return app_factory()


class _Workers(Multiprocess):
    """uvicorn's supervisor, telling when every worker is ready, and clearing the live gauges of
    a worker that died (prometheus-client's mark_process_dead) before uvicorn replaces it."""

    def __init__(
        self, config: uvicorn.Config, sockets: list[socket.socket], on_ready: Callable[[], None]
    ) -> None:
        super().__init__(config, sockets)
        self._on_ready = on_ready
        self.failed_to_start = False

    def init_processes(self) -> None:
        super().init_processes()
        # Ready once every worker has run its lifespan (which opens the checkpoint database);
        # a worker that dies, or a signal, ends the wait, and the supervisor's loop takes over.
        for process in self.processes:
            while not process.is_ready(timeout=1):
                if self.signal_queue or not process.process.is_alive():
                    return
                time.sleep(0.1)
        self._on_ready()

    def keep_subprocess_alive(self) -> None:
        before = {process.pid for process in self.processes}
        super().keep_subprocess_alive()
        for process in self.processes:
            if process.exitcode == STARTUP_FAILURE:
                self.failed_to_start = True
        for pid in before - {process.pid for process in self.processes}:
            mark_process_dead(pid)
