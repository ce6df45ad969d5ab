"""Stopping a long-running command on SIGTERM exactly as on Ctrl-C.

systemd, Docker, Kubernetes and CI runners stop a process with SIGTERM, and a process a shell
starts in the background inherits SIGINT as ignored, so Ctrl-C's KeyboardInterrupt alone would
leave a command deaf to how it is usually stopped. Under `glimprouter`, SIGTERM raises `Stopped`
(a KeyboardInterrupt) in synchronous code, and `run` cancels the main task of an asyncio run, as
asyncio does on Ctrl-C: every `finally` runs, so servers are stopped and results and checkpoints
closed, and the command exits with the status `exit_status` gives.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

T = TypeVar("T")


class Stopped(KeyboardInterrupt):
    """The process was asked to stop by a signal other than Ctrl-C's SIGINT."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def exit_status(interrupt: KeyboardInterrupt) -> int:
    """The shell's convention for a job ended by a signal: 128 + its number (130 for Ctrl-C,
    143 for SIGTERM)."""
    return 128 + getattr(interrupt, "signum", signal.SIGINT)


def _raise_stopped(signum: int, frame: object) -> None:
    raise Stopped(signum)


@contextlib.contextmanager
def sigterm_stops() -> Iterator[None]:
    """While inside, SIGTERM raises `Stopped` in the main thread; the previous handler comes
    back afterwards (a caller in the same process, such as a test, keeps its own)."""
    previous = signal.signal(signal.SIGTERM, _raise_stopped)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(coroutine)`, where SIGTERM cancels the main task as Ctrl-C does, then raises
    `Stopped` once it has unwound."""
    return asyncio.run(_cancelled_by_sigterm(coroutine))


async def _cancelled_by_sigterm(coroutine: Coroutine[Any, Any, T]) -> T:
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    assert main is not None
    received: list[int] = []

    def cancel() -> None:
        received.append(signal.SIGTERM)
        main.cancel()

    previous = signal.getsignal(signal.SIGTERM)
    loop.add_signal_handler(signal.SIGTERM, cancel)
    try:
        return await coroutine
    except asyncio.CancelledError:
        if received:
            raise Stopped(signal.SIGTERM) from None
        raise
    finally:
        # remove_signal_handler leaves the default action (death) in place: put ours back.
        loop.remove_signal_handler(signal.SIGTERM)
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def die_with_parent(parent: int | None = None) -> Callable[[], None] | None:
    """A hook that has the process calling it receive SIGTERM when `parent` (by default this
    process, for a pre-exec hook) dies (Linux; None elsewhere).

    `finally` blocks do not run on SIGKILL or an unhandled SIGTERM; without this a model server
    or a router worker would outlive the command that started it. Resolved before the fork, so
    a child only makes two system calls.
    """
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent, set_parent_death_signal = parent or os.getpid(), 1  # PR_SET_PDEATHSIG

    def hook() -> None:
        prctl(set_parent_death_signal, int(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the hook ran
            os.kill(os.getpid(), signal.SIGTERM)

    return hook
