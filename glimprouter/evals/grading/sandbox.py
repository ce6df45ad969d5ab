"""Running untrusted Python (a model's solution) in a confined subprocess.

Each run gets a fresh temporary working directory (removed afterwards) as its HOME, an
environment without the caller's variables (API keys stay out), its own session, killed as a
whole at the time limit, and limits on memory, CPU time, processes, file size and core dumps
(set by sandbox_child.py). Network: a new network namespace when the grader runs as root (the
child then also turns into `nobody`, so the process limit holds); otherwise a socket stand-in
that only stops code using Python's socket module.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

CHILD = Path(__file__).with_name("sandbox_child.py")


@dataclass(frozen=True)
class SandboxLimits:
    """Per run: wall-clock seconds, address space, processes beyond those the user already
    runs, and the size of each file written (stdout included)."""

    time_s: float = 6.0
    memory_mb: int = 1024
    max_processes: int = 16
    output_mb: int = 64


DEFAULT_LIMITS = SandboxLimits()


@dataclass(frozen=True)
class RunResult:
    """How a run ended and what it wrote."""

    outcome: Literal["ok", "timeout", "memory", "error"]
    stdout: str
    stderr: str


async def run_python(
    source: str, stdin: str, *, fn_name: str | None = None, limits: SandboxLimits = DEFAULT_LIMITS
) -> RunResult:
    """Run `source` as a program reading `stdin`, or, given `fn_name`, call that function (or
    method of `Solution`) with the JSON values on `stdin`'s lines and print its JSON result."""
    with tempfile.TemporaryDirectory(prefix="glimprouter-sandbox-") as workdir:
        work = Path(workdir)
        (work / "solution.py").write_text(source, encoding="utf-8")
        (work / "stdin").write_text(stdin, encoding="utf-8")
        settings = json.dumps(asdict(limits) | {"fn_name": fn_name})
        # Files, not pipes: the output-size limit then applies and nothing can fill a pipe.
        with (
            open(work / "stdin", "rb") as stdin_file,
            open(work / "stdout", "wb") as stdout_file,
            open(work / "stderr", "wb") as stderr_file,
        ):
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-I",
                str(CHILD),
                settings,
                stdin=stdin_file,
                stdout=stdout_file,
                stderr=stderr_file,
                cwd=work,
                env={
                    "PATH": "/usr/bin:/bin",
                    "HOME": workdir,
                    "TMPDIR": workdir,
                    "LANG": "C.UTF-8",
                },
                start_new_session=True,
            )
            try:
                await asyncio.wait_for(process.wait(), limits.time_s)
                timed_out = False
            except TimeoutError:
                timed_out = True
            finally:
                _kill_session(process.pid)  # also whatever it left running
                await process.wait()
        stdout = (work / "stdout").read_text(encoding="utf-8", errors="replace")
        stderr = (work / "stderr").read_text(encoding="utf-8", errors="replace")
    if timed_out or process.returncode in (-signal.SIGXCPU, -signal.SIGKILL):
        return RunResult("timeout", stdout, stderr)
    if process.returncode != 0:
        return RunResult("memory" if "MemoryError" in stderr else "error", stdout, stderr)
    return RunResult("ok", stdout, stderr)


def _kill_session(session_id: int) -> None:
    try:
        os.killpg(session_id, signal.SIGKILL)
    except ProcessLookupError:
        pass  # the session had already ended
