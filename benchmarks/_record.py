"""Appending a benchmark's figures to benchmarks/RESULTS.md with the command, date and machine."""

from __future__ import annotations

import datetime
import os
import platform
import shlex
import sys
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")


def machine() -> str:
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{platform.machine()}, {os.cpu_count()} cores, {memory_gib:.0f} GiB, "
        f"Python {platform.python_version()}, load {os.getloadavg()[0]:.1f}"
    )


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
