"""Grading math: the final answer against the gold answer with math-verify, in worker processes
that a timeout can kill.

An answer such as \\boxed{10^{10^9}} makes sympy compute for minutes inside one C call, which
neither math-verify's SIGALRM timeouts nor a thread can interrupt. Each check therefore runs in a
worker process of its own (at most MAX_WORKERS, reused while they answer in time); one that
computes for longer than its bound (VERIFY_TIMEOUT_S, or `--grade-timeout`), or dies, is killed
and replaced, and the check raises GradingTimeout (or GradingError) instead of hanging the pool:
the eval records that answer as not equal to the gold one, ungraded (`grading: "timeout"`), as
math-verify's own timeout and the common harnesses count it, with its chain kept for
`glimprouter regrade`. The bound is on the worker's CPU time: on a machine busy with model servers a
check waits for a core, and waiting is not what the timeout is for (wall time is bounded too, at
WALL_TIMEOUT_FACTOR times as long, for a worker that gets no CPU at all).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import weakref
from pathlib import Path
from typing import Any

from glimprouter.errors import GlimpRouterError
from glimprouter.evals.datasets import Problem
from glimprouter.evals.grading.base import Grade, shorten
from glimprouter.evals.grading.sandbox import SandboxLimits
from glimprouter.extras import require

VERIFY_TIMEOUT_S = 10.0
WALL_TIMEOUT_FACTOR = 10
# A worker's start (a fresh interpreter importing sympy) is not the check's time: it has its own,
# generous, bound.
STARTUP_TIMEOUT_S = 120.0
MAX_WORKERS = max(1, os.cpu_count() or 1)
WORKER_MEMORY_MB = 2048  # per check: sympy expanding a huge power ends in MemoryError, not swap
WORKER_SCRIPT = Path(__file__).with_name("math_worker.py")


class GradingError(GlimpRouterError):
    """Grading one answer failed (a check that crashed): the answer is ungraded."""


class GradingTimeout(GradingError):
    """A check did not finish within its bound: the answer is ungraded."""


async def grade_math(
    problem: Problem, answer_text: str, final_answer: str | None, limits: SandboxLimits
) -> Grade:
    """Equivalent answers count ("0.5" = "\\frac{1}{2}"); the answer is `final_answer` when
    given, else whatever math-verify finds in `answer_text` (its last \\boxed{} first)."""
    prediction_text = f"\\boxed{{{final_answer}}}" if final_answer is not None else answer_text
    correct, extracted = await verify_in_worker(
        problem.gold, prediction_text, limits.grade_timeout_s
    )
    return Grade(correct, extracted, f"gold {problem.gold!r}, answer {extracted!r}")


async def verify_in_worker(
    gold: str, prediction_text: str, timeout_s: float | None = None
) -> tuple[bool, str | None]:
    """(correct, extracted answer) from math-verify, run in a worker killed once the check has
    computed for `timeout_s` (VERIFY_TIMEOUT_S by default)."""
    timeout_s = VERIFY_TIMEOUT_S if timeout_s is None else timeout_s
    answer = shorten(repr(prediction_text), 80)
    async with _slots():
        worker = _idle.pop() if _idle else await _Worker.start()
        try:
            reply = await worker.call((gold, prediction_text), timeout_s)
        except TimeoutError:
            worker.kill()
            raise GradingTimeout(
                f"math-verify took over {timeout_s:g} s on answer {answer}"
            ) from None
        except BaseException:  # cancelled, or the worker died: never reuse it half-way
            worker.kill()
            raise
        _idle.append(worker)
    if reply[0] == "error":
        raise GradingError(f"math-verify failed on answer {answer}: {shorten(reply[1], 200)}")
    return reply[1], reply[2]


class _Worker:
    """One grading process (math_worker.py) and the pipes to it."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-I", str(WORKER_SCRIPT), str(WORKER_MEMORY_MB)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        os.set_blocking(self.process.stdout.fileno(), False)
        self.received = b""

    @classmethod
    async def start(cls) -> _Worker:
        worker = cls()
        try:
            reply = await worker.receive(STARTUP_TIMEOUT_S)
        except BaseException:
            worker.kill()
            raise
        if reply != ["ready"]:
            worker.kill()
            raise GradingError(f"the math grading worker did not start: {reply!r}")
        return worker

    async def call(self, request: tuple[str, str], timeout_s: float) -> list[Any]:
        """The reply to `request`; TimeoutError once the worker has spent `timeout_s` of CPU time
        on it, or WALL_TIMEOUT_FACTOR times that of wall time."""
        loop = asyncio.get_running_loop()
        wall_deadline = loop.time() + timeout_s * WALL_TIMEOUT_FACTOR
        cpu_at_start = self.cpu_time_s()
        try:
            self.process.stdin.write(json.dumps(request).encode() + b"\n")
            self.process.stdin.flush()
        except BrokenPipeError:
            raise GradingError(
                f"the math grading worker died (exit code {self.process.wait()})"
            ) from None
        while True:
            cpu_left = timeout_s - (self.cpu_time_s() - cpu_at_start)
            wall_left = wall_deadline - loop.time()
            if cpu_left <= 0 or wall_left <= 0:
                raise TimeoutError
            try:
                return await self.receive(min(max(cpu_left, 0.05), wall_left))
            except TimeoutError:
                continue  # the check may have waited for a core: its CPU time tells

    def cpu_time_s(self) -> float:
        psutil = require("psutil")
        try:
            times = psutil.Process(self.process.pid).cpu_times()
        except psutil.Error:  # it died: the end of its output tells the caller
            return 0.0
        return times.user + times.system

    async def receive(self, timeout_s: float) -> list[Any]:
        """The next reply line, waited for without blocking the event loop (each wait for more
        output is bounded by `timeout_s`)."""
        output = self.process.stdout.fileno()
        while b"\n" not in self.received:
            loop = asyncio.get_running_loop()
            readable = asyncio.Event()
            loop.add_reader(output, readable.set)
            try:
                await asyncio.wait_for(readable.wait(), timeout_s)
            finally:
                loop.remove_reader(output)
            chunk = os.read(output, 1 << 16)
            if not chunk:
                raise GradingError(
                    f"the math grading worker died (exit code {self.process.wait()})"
                )
            self.received += chunk
        line, self.received = self.received.split(b"\n", 1)
        return json.loads(line)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()
        self.process.stdin.close()
        self.process.stdout.close()


_idle: list[_Worker] = []


def stop_workers() -> None:
    """Stop the idle workers (an eval's end; the next check starts a new one)."""
    while _idle:
        _idle.pop().kill()


_slots_by_loop: weakref.WeakKeyDictionary[Any, asyncio.Semaphore] = weakref.WeakKeyDictionary()


def _slots() -> asyncio.Semaphore:
    """At most MAX_WORKERS checks at once per event loop (each worker holds sympy in memory)."""
    return _slots_by_loop.setdefault(asyncio.get_running_loop(), asyncio.Semaphore(MAX_WORKERS))
