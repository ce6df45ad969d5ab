"""Evals across a Ray cluster: the problems spread over Ray actors, each running the compiled
graph on its own `concurrency` problems at a time, their records coming back to the driver, which
alone writes the results directory (so resume, the configuration pin and reports see no
difference).

Faults are Ray's to handle: an actor whose process (or node) dies is restarted, elsewhere if need
be, and the calls it had in flight run again there (`max_restarts`, `max_task_retries`); a record
reaches the driver once, whatever was retried. A problem that keeps killing its worker becomes a
failed record after `TASK_RETRIES`, which a rerun retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import socket
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

from glimprouter.errors import ConfigError
from glimprouter.evals.datasets import Problem
from glimprouter.evals.grading import SandboxLimits
from glimprouter.evals.grading.math_grader import stop_workers
from glimprouter.evals.solve import record_base, solve
from glimprouter.extras import install_hint, require
from glimprouter.graph.context import RouterContext

INSTALL = install_hint("ray")
LOCAL = "local"
# How long a cluster's address may take to accept a connection before --ray is refused.
CONNECT_TIMEOUT_S = 10
TASK_RETRIES = 3


@dataclasses.dataclass(frozen=True)
class RayCluster:
    """Where an eval's problems run. `address`: "local" starts a Ray cluster of this machine for
    the eval (and stops it after), "auto" joins the one `ray start` runs here, anything else is a
    cluster's address (ray://host:10001 or host:6379). `workers`: Ray actors, one CPU each; None
    is one per CPU of the cluster."""

    address: str = LOCAL
    workers: int | None = None


def _ray() -> Any:
    return require("ray")


class EvalWorker:
    """A Ray actor: solves the problems it is sent, `max_concurrency` at a time, in its own
    event loop (the compiled graph and its model clients live once per actor)."""

    async def solve(
        self,
        problem: Problem,
        repeat: int,
        context: RouterContext,
        dataset: str,
        limits: SandboxLimits,
    ) -> dict[str, Any]:
        return await solve(problem, repeat, context, dataset, limits)

    async def pid(self) -> int:
        return os.getpid()

    async def close(self) -> None:
        stop_workers()


@contextlib.contextmanager
def connected(cluster: RayCluster | None) -> Iterator[None]:
    """Hold the cluster for several evals (a sweep): joined or started once, stopped after if
    started here. Without a cluster, nothing."""
    if cluster is None:
        yield
        return
    ray = _ray()
    started = _connect(ray, cluster)
    try:
        yield
    finally:
        if started:
            ray.shutdown()


def _connect(ray: Any, cluster: RayCluster) -> bool:
    """Join or start the cluster; True when this eval started it (and stops it)."""
    if ray.is_initialized():
        return False
    options = {"include_dashboard": False, "logging_level": logging.WARNING, "log_to_driver": True}
    # ray.init makes SIGTERM exit the driver on the spot, and its core worker then aborts: keep
    # the command's own handling, which unwinds (the cluster stopped, the results closed).
    on_sigterm = signal.getsignal(signal.SIGTERM)
    try:
        if cluster.address == LOCAL:
            ray.init(**options)
        else:
            _check_listening(cluster.address)
            ray.init(address=cluster.address, **options)
    except ConnectionError as error:
        raise _cannot_join(cluster.address, str(error)) from None
    finally:
        signal.signal(signal.SIGTERM, on_sigterm)
    return True


def _check_listening(address: str) -> None:
    """Refuse at once a HOST:PORT address where nothing listens: Ray would retry for minutes
    before it failed. 'auto' (the cluster `ray start` left here) is Ray's to find."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as error:
        raise _cannot_join(address, f"nothing answers there: {error}") from None


def _cannot_join(address: str, why: str) -> ConfigError:
    # Ray tells a refused token from a cluster that is not there only in its log.
    return ConfigError(
        f"cannot join the Ray cluster at {address!r} ({why}): start it with "
        "`ray start --head`; a cluster with token authentication (what `ray start` enables "
        "since Ray 2.59) is joined with RAY_AUTH_MODE=token set here too (the token from "
        "RAY_AUTH_TOKEN or ~/.ray/auth_token); or give --ray without an address for a local "
        "cluster"
    )


async def solved_on_ray(
    cluster: RayCluster,
    pending: Sequence[tuple[Problem, int]],
    context: RouterContext,
    dataset: str,
    concurrency: int,
    limits: SandboxLimits,
) -> AsyncIterator[dict[str, Any]]:
    """The records of `pending`, solved by Ray actors, as each finishes. Each actor is kept
    `concurrency` problems busy; the next problem goes to the actor that finished one."""
    ray = _ray()
    started = _connect(ray, cluster)
    actors: list[Any] = []
    # A call's future -> (its object ref, the actor, the problem, the repeat).
    in_flight: dict[asyncio.Future[dict[str, Any]], tuple[Any, Any, Problem, int]] = {}
    try:
        workers = cluster.workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        if workers < 1:
            raise ConfigError(f"--ray-workers {workers} must be at least 1")
        remote = ray.remote(num_cpus=1, max_restarts=-1, max_task_retries=TASK_RETRIES)(EvalWorker)
        actors = [remote.options(max_concurrency=concurrency).remote() for _ in range(workers)]
        queue = list(reversed(pending))

        def submit(actor: Any) -> None:
            problem, repeat = queue.pop()
            call = actor.solve.remote(problem, repeat, context, dataset, limits)
            in_flight[asyncio.wrap_future(call.future())] = (call, actor, problem, repeat)

        for _ in range(concurrency):
            for actor in actors:
                if queue:
                    submit(actor)
        while in_flight:
            finished, _ = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
            for future in finished:
                _, actor, problem, repeat = in_flight.pop(future)
                yield _record_of(ray, future, problem, repeat, context, dataset)
                if queue:
                    submit(actor)
    finally:
        for future, (call, *_) in in_flight.items():
            future.cancel()
            ray.cancel(call)  # not retried on a worker about to stop
        if actors:
            closing = [actor.close.remote() for actor in actors]
            await asyncio.wait([asyncio.wrap_future(c.future()) for c in closing], timeout=10)
            for actor in actors:
                ray.kill(actor)
        if started:
            ray.shutdown()


def _record_of(
    ray: Any,
    future: asyncio.Future[dict[str, Any]],
    problem: Problem,
    repeat: int,
    context: RouterContext,
    dataset: str,
) -> dict[str, Any]:
    """The finished call's record; a call Ray gave up on (its worker died `TASK_RETRIES` times
    over) is a failed record, which a rerun retries. Errors of our own code propagate, as in the
    local runner."""
    try:
        return future.result()
    except ray.exceptions.RayTaskError as error:
        raise error.as_instanceof_cause() from None
    except ray.exceptions.RayError as error:
        return {
            **record_base(problem, repeat, context, dataset),
            "error": f"its Ray worker died {TASK_RETRIES + 1} times: {type(error).__name__}",
        }
