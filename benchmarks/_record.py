"""Shared by the benchmark scripts: timing a coroutine, and appending figures to
benchmarks/RESULTS.md with the command, date and machine."""

from __future__ import annotations

import asyncio
import datetime
import os
import platform
import shlex
import sys
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from glimprouter.vllm_launcher.pair import machine_memory_gib

T = TypeVar("T")

RESULTS = Path(__file__).with_name("RESULTS.md")


def machine() -> str:
    return (
        f"{platform.machine()}, {os.cpu_count()} cores, {machine_memory_gib():.0f} GiB, "
        f"Python {platform.python_version()}, load {os.getloadavg()[0]:.1f}"
    )


def timed(work: Coroutine[Any, Any, T]) -> tuple[float, float, T]:
    """Wall seconds, this process's CPU seconds, and the result of running `work`."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = asyncio.run(work)
    return time.perf_counter() - wall, time.process_time() - cpu, result


def record(title: str, lines: list[str]) -> None:
    """Print the figures and append them to RESULTS.md."""
    command = "python " + " ".join(shlex.quote(arg) for arg in sys.argv)
    block = [
        f"## {title}",
        "",
        f"- when: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC",
        f"- machine: {machine()}",
        f"- command: `{command}`",
        "",
        *lines,
        "",
    ]
    text = "\n".join(block)
    print(text)
    with RESULTS.open("a", encoding="utf-8") as file:
        if file.tell() == 0:
            file.write("# Benchmark results\n\nAppended by the scripts in this folder.\n\n")
        file.write(text + "\n")
