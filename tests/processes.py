"""Processes the tests start, and waits that fail instead of hanging.

Every process runs in a process group of its own, gets SIGTERM should the test session die
(Linux's parent-death signal), and is stopped when its test ends, pass or fail: SIGTERM to the
group (what systemd, Docker, Kubernetes and CI runners send), then SIGKILL after a grace period.
Waits are bounded: a deadline is an upper bound for a slow machine, never a guess at how long
something takes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from typing import IO, Any, TypeVar

import psutil

from glimprouter.stopping import die_with_parent

T = TypeVar("T")

STOP_GRACE_S = 60.0
# An upper bound for a command the tests run to its end (venv creation, pip, a setup script).
COMMAND_GUARD_S = 600.0
# What .ci/run marks every process of the session with, so .ci/leftovers.py finds what outlived it.
SESSION_MARKER = "GLIMPROUTER_TEST_SESSION"


def session_env(env: dict[str, str]) -> dict[str, str]:
    """`env`, an environment a test builds from scratch, keeping the session's marker."""
    return env | {name: os.environ[name] for name in (SESSION_MARKER,) if name in os.environ}


def _preexec(ignore_sigint: bool) -> Callable[[], None]:
    parent_death = die_with_parent()

    def hook() -> None:
        if parent_death is not None:
            parent_death()
        if ignore_sigint:  # as a shell starts a background job: Ctrl-C never reaches it
            signal.signal(signal.SIGINT, signal.SIG_IGN)

    return hook


def start(command: list[str], *, ignore_sigint: bool = False, **popen: Any) -> subprocess.Popen:
    """Start `command` in its own process group, dying with this process."""
    return subprocess.Popen(
        command, start_new_session=True, preexec_fn=_preexec(ignore_sigint), **popen
    )


def stop(process: subprocess.Popen, grace_s: float = STOP_GRACE_S) -> int:
    """SIGTERM the process group, SIGKILL it after `grace_s`; the exit status. Whatever is left
    in the group afterwards (workers of a dead parent) is killed too."""
    if process.poll() is None:
        signal_group(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            signal_group(process.pid, signal.SIGKILL)
            process.wait()
    signal_group(process.pid, signal.SIGKILL)
    return process.returncode


def signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


@contextlib.contextmanager
def running(command: list[str], **options: Any) -> Iterator[subprocess.Popen]:
    """`start(command)`, and `stop` it when the block ends however it ends."""
    process = start(command, **options)
    try:
        yield process
    finally:
        stop(process)


class Lines:
    """The lines a process writes to a pipe, read by a thread, so a wait can time out."""

    def __init__(self, stream: IO[str]) -> None:
        self.seen: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self._queue.put(line)
        self._queue.put(None)

    def wait_for(self, wanted: Callable[[str], T], timeout_s: float, what: str) -> T:
        """The first truthy `wanted(line)` of the lines still to come; fails on the end of the
        output or at the deadline, showing what was printed."""
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            try:
                line = self._queue.get(timeout=max(remaining, 0))
            except queue.Empty:
                raise AssertionError(
                    f"no {what} within {timeout_s:g} s; printed:\n{''.join(self.seen)}"
                ) from None
            if line is None:
                raise AssertionError(f"output ended before {what}; printed:\n{''.join(self.seen)}")
            self.seen.append(line)
            if found := wanted(line):
                return found

    def rest(self, timeout_s: float) -> str:
        """Everything printed until the output ends (bounded by `timeout_s`)."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                line = self._queue.get(timeout=max(deadline - time.monotonic(), 0))
            except queue.Empty:
                raise AssertionError(f"output did not end within {timeout_s:g} s") from None
            if line is None:
                return "".join(self.seen)
            self.seen.append(line)


def wait_until(condition: Callable[[], T], timeout_s: float, what: str, poll_s: float = 0.05) -> T:
    """Poll `condition` until it is truthy; fail naming `what` at the deadline."""
    deadline = time.monotonic() + timeout_s
    while not (result := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s:g} s")
        time.sleep(poll_s)
    return result


async def wait_until_async(
    condition: Callable[[], T], timeout_s: float, what: str, poll_s: float = 0.02
) -> T:
    """`wait_until` for coroutines: the event loop keeps running between polls."""
    deadline = time.monotonic() + timeout_s
    while not (result := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s:g} s")
        await asyncio.sleep(poll_s)
    return result


def processes_marked(marker: str) -> list[psutil.Process]:
    """Live processes whose environment carries `marker` (what a subprocess and its children
    inherit)."""
    marked = []
    for process in psutil.process_iter():
        try:
            if process.environ().get("GLIMPROUTER_RAY_TEST") == marker:
                marked.append(process)
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
            pass
    return marked
