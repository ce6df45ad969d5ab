"""Running untrusted Python (a model's solution) in a confined subprocess.

Every run gets a fresh temporary working directory (removed afterwards) as its HOME and TMPDIR,
an environment without the caller's variables (API keys stay out), a session of its own that is
killed as a whole at the wall-clock limit, limits on memory, CPU time, processes, the size of each
file and core dumps, and no gaining privileges through setuid programs (sandbox_child.py confines
it). Its output is read back through the grader's own descriptors, never by path, so a symlink it
leaves in their place reads nothing of the host.

As root, where namespaces can be made (CAP_SYS_ADMIN), the run also has PID, mount, network and
IPC namespaces of its own and runs as `nobody` without capabilities. It then cannot
- read or write the host's files: its root is a tmpfs holding /usr, /etc, /bin, /lib*, /sbin and
  the interpreter's prefixes (read-only; world-readable files there stay readable), null, zero,
  full, random and urandom, its own /proc, and its working directory, the one place it can write.
  The user's home, /tmp, /var/tmp, /dev/shm, /run, /home and the repository are not there, bar
  the empty directories that lead to the interpreter and to the working directory;
- connect anywhere: its network has only a loopback, which is down; the host's Unix sockets are
  not in its file system, and abstract ones not in its network namespace;
- signal any process outside the run: it sees none (its parent, PID 1, is a root-owned init);
- leave anything behind, or outlive the grader: when the init ends (with the solution, or killed
  with the session or the grader), the kernel kills the rest of the namespace, daemons
  included, and the IPC namespace takes any SysV shared memory along;
- fork beyond `max_processes`.
Its working directory, the one place it can write, is a tmpfs of its own (`files_mb`,
`max_files`) over the host's directory, which holds only what the grader wrote and reads back.

Where namespaces cannot be made (not root, Docker's default seccomp profile, a rootless
container, the namespace limit reached) or the file system cannot be built, the solution does not
run: `run_python` raises SandboxUnavailable, whose line says why and how to accept the risk
(`allow_unconfined`, `--allow-unconfined-code`, GLIMPROUTER_ALLOW_UNCONFINED_CODE=1). Accepted, it
runs with the limits above only: as the grader's user it can read and write what that user can
(the home directory too), signal the user's processes (the grader too), reach the network other
than through Python's socket module (a stand-in blocks only that), and, without a cgroup
(below), leave behind processes that start a session of their own; as root it runs as `nobody`
keeping the right to read any file (the interpreter may be under /root), writes where `nobody`
may and signals `nobody`'s processes (other runs).

Where a cgroup can be made (cgroups.py: root, with cgroup v2's or v1's memory and pids
controllers writable), the run has one of its own: `memory_mb` then bounds the memory of all its
processes together, swap included, and `max_processes` its tasks, exactly and apart from other
runs; a run the kernel kills for its memory is a "memory" outcome, and whatever the run leaves in
its cgroup is killed at its end (unconfined too). Each process also has `memory_mb` of address
space. Without a cgroup the user gets `max_processes` more tasks, so a run's total memory is
bounded by the product (16 GiB by default): the run goes ahead rather than being refused, since
that bound still holds, and what keeps the host's files, network and processes out of reach is
the namespaces, which a missing cgroup does not weaken.

Why our own namespace code rather than bubblewrap (bwrap, the Debian package Flatpak relies on):
bwrap makes the same namespaces with the same system calls, so it is refused exactly where our
unshare is (Docker's default seccomp profile, a rootless container without user namespaces) and
would not widen where code can be graded; it sets no resource limits, so the rlimits, the bounded
tmpfs and the cgroup would stay ours all the same; and it is a system package that `pip install`
cannot bring, where this code needs only the standard library. What it would replace is the
mounts and the privilege drop (sandbox_child.py), which the hostile-program suite
(tests/integration/test_sandbox_hostile.py, test_sandbox_isolation.py) checks from the solution's
side on every run of the tests. Should that code grow (seccomp filters, Landlock), bwrap becomes the
better trade.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import BinaryIO, Literal

from glimprouter.errors import GlimpRouterError
from glimprouter.evals.grading.cgroups import EMPTY_WITHIN_S, RunCgroup, make_run_cgroup

CHILD = Path(__file__).with_name("sandbox_child.py")
ALLOW_UNCONFINED_ENV = "GLIMPROUTER_ALLOW_UNCONFINED_CODE"
log = logging.getLogger(__name__)


class SandboxUnavailable(GlimpRouterError):
    """The sandbox could not confine a run, so the solution did not run: the problem's grading
    failed (a rerun retries it), it is not a wrong answer."""


@dataclass(frozen=True)
class SandboxLimits:
    """Per run: wall-clock seconds, memory (all its processes together where a cgroup can be
    made, else each process's address space), processes besides its first (beyond those the
    user already runs, without a cgroup), the size of each file written (stdout included), open
    descriptors, the bytes and files of its working directory; and whether to run code that
    cannot be isolated (see above)."""

    time_s: float = 6.0
    memory_mb: int = 1024
    max_processes: int = 16
    output_mb: int = 64
    open_files: int = 256
    files_mb: int = 64
    max_files: int = 1024
    allow_unconfined: bool = False
    # Not the sandbox's, but every grader's limits travel together (to the Ray workers too):
    # CPU seconds math-verify may spend on one answer (None: math_grader.VERIFY_TIMEOUT_S).
    grade_timeout_s: float | None = None

    @property
    def unconfined_allowed(self) -> bool:
        """`allow_unconfined`, or the environment's GLIMPROUTER_ALLOW_UNCONFINED_CODE=1."""
        return self.allow_unconfined or os.environ.get(ALLOW_UNCONFINED_ENV) == "1"


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
    # A process that escaped the session may still write there: leave the directory then.
    with tempfile.TemporaryDirectory(
        prefix="glimprouter-sandbox-", ignore_cleanup_errors=True
    ) as workdir:
        work = Path(workdir)
        # Model text may hold lone surrogates, which no file can: they become "?".
        (work / "solution.py").write_text(source, encoding="utf-8", errors="replace")
        (work / "stdin").write_text(stdin, encoding="utf-8", errors="replace")
        # The solution's process and max_processes more.
        cgroup = make_run_cgroup(limits.memory_mb << 20, limits.max_processes + 1)
        status_read, status_write = os.pipe()
        settings = asdict(limits) | {
            "fn_name": fn_name,
            "allow_unconfined": limits.unconfined_allowed,
            "status_fd": status_write,
            "cgroup_procs": cgroup.procs_files if cgroup else [],
        }
        # Files, not pipes: the output-size limit then applies and nothing can fill a pipe.
        try:
            with (
                open(work / "stdin", "rb") as stdin_file,
                open(work / "stdout", "w+b") as stdout_file,
                open(work / "stderr", "w+b") as stderr_file,
            ):
                process = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-I",
                    str(CHILD),
                    json.dumps(settings),
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
                    pass_fds=(status_write,),
                )
                os.close(status_write)
                status_write = -1
                try:
                    await asyncio.wait_for(process.wait(), limits.time_s)
                    timed_out = False
                except TimeoutError:
                    timed_out = True
                finally:
                    _kill_session(process.pid)  # also whatever it left running
                    await process.wait()
                status = _read_status(status_read)
                stdout, stderr = (_read_back(file) for file in (stdout_file, stderr_file))
                out_of_memory = cgroup is not None and cgroup.oom_killed()
        finally:
            os.close(status_read)
            if status_write >= 0:
                os.close(status_write)
            if cgroup is not None:
                await _remove(cgroup)
    _check_confined(status, limits, timed_out)
    if out_of_memory:  # the first limit the run met: what followed (a hang, an error) came of it
        stderr += f"\nkilled by the kernel: its processes together went over {limits.memory_mb} MiB"
        return RunResult("memory", stdout, stderr)
    code = process.returncode
    killed_by = _signal_of(code)
    if timed_out or killed_by == signal.SIGXCPU:
        return RunResult("timeout", stdout, stderr)
    if killed_by:
        stderr += f"\nkilled by signal {killed_by} ({signal.strsignal(killed_by)})"
    if code != 0:
        return RunResult("memory" if "MemoryError" in stderr else "error", stdout, stderr)
    return RunResult("ok", stdout, stderr)


async def check_sandbox(limits: SandboxLimits = DEFAULT_LIMITS) -> None:
    """Raise SandboxUnavailable now, before any model work, if runs cannot be confined here."""
    await run_python("", "", limits=replace(limits, time_s=max(limits.time_s, 30.0)))


async def _remove(cgroup: RunCgroup) -> None:
    """The run's result stands either way: only the directory is left behind."""
    if not await cgroup.remove():
        log.warning(
            "the sandbox left the run's cgroup %s behind: a process in it outlived SIGKILL for "
            "%g s (stuck in the kernel?); remove it with rmdir once it is empty",
            cgroup.directories[0],
            EMPTY_WITHIN_S,
        )


def _read_status(fd: int) -> str:
    """The status line the child wrote before the solution started ("" if none): read without
    blocking, since a process the solution left behind may still hold the descriptor."""
    os.set_blocking(fd, False)
    try:
        return os.read(fd, 4096).decode("utf-8", "replace").strip()
    except BlockingIOError:
        return ""


def _check_confined(status: str, limits: SandboxLimits, timed_out: bool) -> None:
    if status in ("confined", "unconfined"):
        return
    if status.startswith("refused: "):
        raise SandboxUnavailable(
            f"the code sandbox cannot isolate model-written code here ({status[9:]}): run the "
            "eval as root where namespaces can be made (not under Docker's default seccomp "
            "profile), or accept the risk with --allow-unconfined-code / "
            f"{ALLOW_UNCONFINED_ENV}=1"
        )
    why = status.removeprefix("failed: ") or (
        f"it did not start within {limits.time_s:g} s" if timed_out else "it ended before starting"
    )
    raise SandboxUnavailable(f"the code sandbox could not confine a run ({why}): check the machine")


def _read_back(file: BinaryIO) -> str:
    file.seek(0)
    return file.read().decode("utf-8", errors="replace")


def _signal_of(returncode: int) -> int:
    """The signal that ended the solution, or 0: the child's own (a negative code) or, from
    inside the namespaces, passed on as 128 + n, as a shell does."""
    number = -returncode if returncode < 0 else returncode - 128
    return number if number in signal.valid_signals() else 0


def _kill_session(session_id: int) -> None:
    try:
        os.killpg(session_id, signal.SIGKILL)
    except ProcessLookupError:
        pass  # the session had already ended
