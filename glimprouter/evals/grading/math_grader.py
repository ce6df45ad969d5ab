"""Grading math: the final answer against the gold answer with math-verify, in worker processes
that a timeout can kill.

An answer such as \\boxed{10^{10^9}} makes sympy compute for minutes inside one C call, which
neither math-verify's SIGALRM timeouts nor a thread can interrupt. Each check therefore runs in a
worker process of its own (at most MAX_WORKERS, reused while they answer in time); one that
computes for longer than VERIFY_TIMEOUT_S, or dies, is killed and replaced, and the problem's
grading fails with a GradingError (recorded as an error, which a rerun retries) instead of
hanging the pool. The bound is on the worker's CPU time: on a machine busy with model servers a
check waits for a core, and waiting is not what the timeout is for (wall time is bounded too, at
WALL_TIMEOUT_FACTOR times as long, for a worker that gets no CPU at all).
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import multiprocessing
import os
import resource
import signal
import weakref
from multiprocessing.connection import Connection
from typing import Any

import psutil

from glimprouter.errors import GlimpRouterError
from glimprouter.evals.datasets import Problem
from glimprouter.evals.grading.base import Grade, shorten
from glimprouter.evals.grading.sandbox import SandboxLimits

VERIFY_TIMEOUT_S = 10.0
WALL_TIMEOUT_FACTOR = 10
# A worker's start (a fresh interpreter importing sympy) is not the check's time: it has its own,
# generous, bound.
STARTUP_TIMEOUT_S = 120.0
MAX_WORKERS = max(1, os.cpu_count() or 1)
WORKER_MEMORY_MB = 2048  # sympy expanding a huge power ends in MemoryError, not in swap
PR_SET_PDEATHSIG = 1


class GradingError(GlimpRouterError):
    """Grading one answer failed (a check that hung or crashed): not a wrong answer."""


async def grade_math(
    problem: Problem, answer_text: str, final_answer: str | None, limits: SandboxLimits
) -> Grade:
    """Equivalent answers count ("0.5" = "\\frac{1}{2}"); the answer is `final_answer` when
    given, else whatever math-verify finds in `answer_text` (its last \\boxed{} first)."""
    prediction_text = f"\\boxed{{{final_answer}}}" if final_answer is not None else answer_text
    correct, extracted = await verify_in_worker(problem.gold, prediction_text)
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
            raise GradingError(
                f"math-verify took over {timeout_s:g} s on answer {answer}"
            ) from None
        except BaseException:  # cancelled, or the worker died: never reuse it half-way
            worker.kill()
            raise
        _idle.append(worker)
    if reply[0] == "error":
        raise GradingError(f"math-verify failed on answer {answer}: {reply[1]}")
    return reply[1], reply[2]


class _Worker:
    """One grading process and the pipe to it."""

    def __init__(self) -> None:
        context = multiprocessing.get_context("spawn")  # no fork of a threaded grader
        self.connection, child_end = context.Pipe()
        self.process = context.Process(target=_serve, args=(child_end,), daemon=True)
        self.process.start()
        child_end.close()

    @classmethod
    async def start(cls) -> _Worker:
        worker = cls()
        try:
            reply = await worker.receive(STARTUP_TIMEOUT_S)
        except BaseException:
            worker.kill()
            raise
        if reply != ("ready",):
            worker.kill()
            raise GradingError(f"the math grading worker did not start: {reply!r}")
        return worker

    async def call(self, request: tuple[str, str], timeout_s: float) -> tuple[Any, ...]:
        """The reply to `request`; TimeoutError once the worker has spent `timeout_s` of CPU time
        on it, or WALL_TIMEOUT_FACTOR times that of wall time."""
        loop = asyncio.get_running_loop()
        wall_deadline = loop.time() + timeout_s * WALL_TIMEOUT_FACTOR
        cpu_at_start = self.cpu_time_s()
        self.connection.send(request)
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
        try:
            times = psutil.Process(self.process.pid).cpu_times()
        except psutil.Error:  # it died: its pipe's end of file tells the caller
            return 0.0
        return times.user + times.system

    async def receive(self, timeout_s: float) -> tuple[Any, ...]:
        """The next reply, waited for without blocking the event loop."""
        loop = asyncio.get_running_loop()
        readable = asyncio.Event()
        loop.add_reader(self.connection.fileno(), readable.set)
        try:
            await asyncio.wait_for(readable.wait(), timeout_s)
        finally:
            loop.remove_reader(self.connection.fileno())
        try:
            return self.connection.recv()
        except EOFError:
            raise GradingError(
                f"the math grading worker died (exit code {self.process.exitcode})"
            ) from None

    def kill(self) -> None:
        self.process.kill()
        self.process.join()
        self.connection.close()


_idle: list[_Worker] = []


def stop_workers() -> None:
    """Stop the idle workers (an eval's end; the next check starts a new one)."""
    while _idle:
        _idle.pop().kill()


_slots_by_loop: weakref.WeakKeyDictionary[Any, asyncio.Semaphore] = weakref.WeakKeyDictionary()


def _slots() -> asyncio.Semaphore:
    """At most MAX_WORKERS checks at once per event loop (each worker holds sympy in memory)."""
    return _slots_by_loop.setdefault(asyncio.get_running_loop(), asyncio.Semaphore(MAX_WORKERS))


def _serve(connection: Connection) -> None:
    """The worker's loop: answer ("ok", correct, extracted) or ("error", why) per request."""
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # dies with the grader
    memory = WORKER_MEMORY_MB << 20
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    # math-verify warns once that its own timeouts are off; they are, on purpose (see above).
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    from math_verify import parse, verify

    connection.send(("ready",))
    while True:
        try:
            gold, prediction_text = connection.recv()
        except EOFError:
            return  # the grader closed the pipe
        try:
            gold_parsed = parse(f"${gold}$", parsing_timeout=None)
            prediction = parse(prediction_text, parsing_timeout=None)
            extracted = str(prediction[-1]) if prediction else None
            correct = bool(verify(gold_parsed, prediction, timeout_seconds=None))
            connection.send(("ok", correct, extracted))
        except Exception as error:  # noqa: BLE001 - whatever sympy raises is this answer's failure
            connection.send(("error", f"{type(error).__name__}: {shorten(str(error), 200)}"))
