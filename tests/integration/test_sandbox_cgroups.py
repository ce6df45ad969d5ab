"""A run's cgroup: its processes together stay within `memory_mb` and `max_processes`, a run
stopped there is a memory verdict, and the cgroup is gone when the run ends, however it ends.

The runs need a cgroup that can be made here (root, cgroup v2's or v1's memory and pids
controllers writable): their tests skip elsewhere, where sandbox.py keeps per-process bounds."""

from __future__ import annotations

import asyncio
import resource
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from glimprouter.evals.grading import SandboxLimits, sandbox
from glimprouter.evals.grading.cgroups import PREFIX, RunCgroup, cgroup_parents, make_run_cgroup
from glimprouter.evals.grading.sandbox import run_python
from tests.sandboxes import FORK_BOMB, ROOMY, grader_without_namespaces, needs_namespaces


def _cgroups_can_be_made() -> bool:
    probe = make_run_cgroup(64 << 20, 4)
    if probe is None:
        return False
    asyncio.run(probe.remove())
    return True


needs_cgroups = pytest.mark.skipif(
    not _cgroups_can_be_made(),
    reason="needs a cgroup of its own per run (root; memory and pids controllers writable)",
)


@pytest.fixture(autouse=True)
def made_cgroups(monkeypatch: pytest.MonkeyPatch) -> list[RunCgroup]:
    """The cgroups this test's runs make (other runs on the machine make theirs alongside)."""
    made: list[RunCgroup] = []

    def recording(*args: object) -> RunCgroup | None:
        cgroup = make_run_cgroup(*args)
        if cgroup is not None:
            made.append(cgroup)
        return cgroup

    monkeypatch.setattr(sandbox, "make_run_cgroup", recording)
    return made


def _left(made: list[RunCgroup]) -> list[Path]:
    """The directories of the runs' cgroups still there: none should be, however a run ended."""
    assert made, "the run had no cgroup"
    return [directory for cgroup in made for directory in cgroup.directories if directory.exists()]


# Each child holds its share until all are alive together; the parent hears from each in turn
# (EOF: it was killed) and prints "escaped" only if all of them held theirs at once.
HOLDERS = """import os
children = []
for _ in range(6):
    ready_read, ready_write = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(ready_read)
        held = b"x" * ({share_mb} << 20)
        os.write(ready_write, b"1")
        os.close(ready_write)
        os.read(os.pipe()[0], 1)  # forever: the run's end kills it
    os.close(ready_write)
    children.append(child)
    if os.read(ready_read, 1) != b"1":
        print("a child was killed")
        os._exit(1)
alive = all(os.waitpid(child, os.WNOHANG) == (0, 0) for child in children)
print("escaped" if alive else "a child was killed")
"""


@needs_namespaces
@needs_cgroups
@pytest.mark.parametrize(
    ("share_mb", "outcome"), [(150, "memory"), (40, "ok")], ids=["over", "under"]
)
async def test_processes_share_one_memory_bound(
    share_mb: int, outcome: str, made_cgroups: list[RunCgroup]
) -> None:
    """Six children of 150 MB, each well within its own 512 MiB, are 900 MB together: over the
    run's 512 MiB, the run is stopped as out of memory; six of 40 MB run to the end."""
    limits = replace(ROOMY, memory_mb=512)
    result = await run_python(HOLDERS.format(share_mb=share_mb), "", limits=limits)
    assert result.outcome == outcome, result
    if outcome == "memory":
        assert "escaped" not in result.stdout and "together went over 512 MiB" in result.stderr
    else:
        assert result.stdout == "escaped\n"
    assert _left(made_cgroups) == []


FORKS_UNTIL_REFUSED = """import os, resource, time
forked = 0
while forked < 64:
    try:
        if os.fork() == 0:
            time.sleep(60)
    except OSError:
        break
    forked += 1
pids = next(line for line in open("/proc/self/cgroup") if ":pids:" in line or line[:3] == "0::")
in_its_cgroup = pids.rstrip().rsplit("/", 1)[-1].startswith("glimprouter-run-")
print(forked, in_its_cgroup, resource.getrlimit(resource.RLIMIT_NPROC)[0])
"""


@needs_namespaces
async def test_without_a_cgroup_memory_is_bounded_per_process(monkeypatch) -> None:
    """Where no cgroup can be made, each process keeps its own `memory_mb` of address space:
    six children of 150 MB together pass a bound of 512 MiB (the cgroup would stop them), and
    one process of 1 GiB does not."""
    monkeypatch.setattr(sandbox, "make_run_cgroup", lambda *_: None)
    limits = replace(ROOMY, memory_mb=512)
    together = await run_python(HOLDERS.format(share_mb=150), "", limits=limits)
    assert (together.outcome, together.stdout) == ("ok", "escaped\n"), together
    alone = await run_python("held = b'x' * (1 << 30)\nprint('escaped')", "", limits=limits)
    assert alone.outcome == "memory" and "escaped" not in alone.stdout, alone


@needs_namespaces
@needs_cgroups
async def test_forks_stop_at_the_runs_task_bound(made_cgroups: list[RunCgroup]) -> None:
    """The run's cgroup, not a count of the user's processes, refuses the fifth fork: the
    per-user limit stays the grader's."""
    limits = replace(ROOMY, max_processes=4)
    result = await run_python(FORKS_UNTIL_REFUSED, "", limits=limits)
    per_user = resource.getrlimit(resource.RLIMIT_NPROC)[0]
    assert (result.outcome, result.stdout) == ("ok", f"4 True {per_user}\n"), result
    assert _left(made_cgroups) == []


@needs_namespaces
@needs_cgroups
@pytest.mark.parametrize(
    ("source", "outcome"),
    [
        ("print(1)", "ok"),
        ("raise ValueError", "error"),
        (FORK_BOMB, "timeout"),
        ("import time\ntime.sleep(60)", "timeout"),
    ],
    ids=["ok", "error", "fork-bomb", "sleeper"],
)
async def test_the_cgroup_is_gone_after_the_run(
    source: str, outcome: str, made_cgroups: list[RunCgroup]
) -> None:
    limits = SandboxLimits(time_s=1.0) if outcome == "timeout" else ROOMY
    result = await run_python(source, "", limits=limits)
    assert result.outcome == outcome, result
    assert _left(made_cgroups) == []


@needs_cgroups
def test_the_cgroups_of_a_grader_killed_outright_are_removed_by_the_next() -> None:
    """A grader killed with kill -9 leaves its runs' cgroups (empty: the runs died with it)."""
    gone = _ended_pid()
    cgroup = make_run_cgroup(64 << 20, 4)
    assert cgroup is not None
    abandoned = [d.with_name(f"{PREFIX}{gone}-0") for d in cgroup.directories]
    asyncio.run(cgroup.remove())
    for directory in abandoned:
        directory.mkdir()
    again = make_run_cgroup(64 << 20, 4)
    assert again is not None
    asyncio.run(again.remove())
    assert [directory for directory in abandoned if directory.exists()] == []


def _ended_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


HYBRID_MOUNTS = (
    "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"
    "39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids\n"
    "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n"
)


def test_v2_first_then_v1_under_the_processs_own() -> None:
    own = "8:pids:/\n4:memory:/process_api/abc\n0::/session\n"
    assert cgroup_parents(own, HYBRID_MOUNTS) == [
        (2, [Path("/sys/fs/cgroup/unified/session")]),
        (1, [Path("/sys/fs/cgroup/memory/process_api/abc"), Path("/sys/fs/cgroup/pids")]),
    ]


def test_a_cgroup_the_mount_does_not_show_is_not_used() -> None:
    mounts = HYBRID_MOUNTS.replace("0:32 / ", "0:32 /other ").replace("0:38 / ", "0:38 /else ")
    assert cgroup_parents("8:pids:/\n4:memory:/process_api/abc\n0::/x\n", mounts) == []


def test_without_a_pids_hierarchy_v1_is_not_used() -> None:
    mounts = "".join(line + "\n" for line in HYBRID_MOUNTS.splitlines() if "pids" not in line)
    assert cgroup_parents("8:pids:/\n4:memory:/\n", mounts) == []


# Unconfined, a daemon (a session of its own) outlives the run's session kill: not its cgroup.
DAEMON_SOLUTION = (  # the run ends once the daemon has said its PID
    "import os, time\nsaid, say = os.pipe()\nif os.fork() == 0:\n    os.setsid()\n"
    "    print(os.getpid(), flush=True)\n    os.write(say, b'1')\n    time.sleep(60)\n"
    "os.read(said, 1)"
)
DAEMON = (
    "import asyncio\n"
    "from glimprouter.evals.grading.sandbox import SandboxLimits, run_python\n"
    f"limits = SandboxLimits(time_s={ROOMY.time_s}, allow_unconfined=True)\n"
    f"print(asyncio.run(run_python({DAEMON_SOLUTION!r}, '', limits=limits)).stdout, end='')\n"
)


@needs_cgroups
def test_an_unconfined_runs_daemon_ends_with_the_run() -> None:
    ran = grader_without_namespaces(DAEMON, {})
    assert ran.returncode == 0, ran.stderr
    daemon = Path(f"/proc/{int(ran.stdout)}/status")
    # Killed, it is gone, or a zombie where the container's init does not reap orphans.
    assert not daemon.exists() or "State:\tZ" in daemon.read_text(), daemon.read_text()
