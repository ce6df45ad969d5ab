"""A cgroup of its own for each sandboxed run: the run's total memory and tasks bounded.

The grader makes the cgroup before the run starts, with memory limited to the run's `memory_mb`
(swap included) and tasks to its process allowance; the run's solution process joins it while
still root, so everything it starts is counted there (sandbox_child.py). After the run the
grader kills what is left in it, waits for it to empty and removes it.

Both layouts are used: cgroup v2, where the grader's own cgroup can hand the memory and pids
controllers to a child (the root of the hierarchy, or a subtree delegated with them enabled),
else cgroup v1's memory and pids hierarchies, under the grader's own cgroup in each. Where
neither can be made (not root, a read-only cgroupfs, a controller missing) `make_run_cgroup`
returns None and the run keeps the per-process bounds only (see sandbox.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import time
from dataclasses import dataclass
from pathlib import Path

# Processes killed at the end of a run leave their cgroup within milliseconds; past this, one
# that cannot be killed (stuck in the kernel) keeps it, and the directory is left behind.
EMPTY_WITHIN_S = 10.0
PREFIX = "glimprouter-run-"  # then the grader's PID


@dataclass(frozen=True)
class Hierarchy:
    """Where a cgroup hierarchy is mounted, and its controllers (v1: in the mount's options)."""

    mount_point: Path
    mount_root: str
    controllers: frozenset[str]


@dataclass(frozen=True)
class RunCgroup:
    """The run's cgroup: one directory (v2) or one per hierarchy (v1: memory, pids)."""

    version: int
    directories: tuple[Path, ...]

    @property
    def procs_files(self) -> list[str]:
        """The files the run's process writes itself into, one per directory."""
        return [str(directory / "cgroup.procs") for directory in self.directories]

    def oom_killed(self) -> bool:
        """Whether the kernel killed a task of the run for going over its memory limit."""
        name = "memory.events" if self.version == 2 else "memory.oom_control"
        for directory in self.directories:
            if (directory / name).exists():
                fields = dict(line.split() for line in (directory / name).read_text().splitlines())
                return int(fields.get("oom_kill", 0)) > 0
        return False

    async def remove(self) -> bool:
        """Kill what is left of the run, wait for its cgroup to empty and remove it; False if it
        did not empty in time (the directory then stays)."""
        deadline = time.monotonic() + EMPTY_WITHIN_S
        while members := self._members():
            if time.monotonic() > deadline:
                return False
            for pid in members:
                _kill_if_member(pid, self.directories[0])
            await asyncio.sleep(0.005)  # the killed processes leave as the kernel reaps them
        for directory in self.directories:
            directory.rmdir()
        return True

    def _members(self) -> set[int]:
        members: set[int] = set()
        for procs in self.procs_files:
            members.update(int(pid) for pid in Path(procs).read_text().split())
        return members


def make_run_cgroup(memory_bytes: int, max_tasks: int) -> RunCgroup | None:
    """A fresh cgroup bounding memory (swap included) and tasks, or None where none can be made
    here."""
    name = f"{PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
    try:
        with open("/proc/self/cgroup") as cgroups, open("/proc/self/mountinfo") as mounts:
            candidates = cgroup_parents(cgroups.read(), mounts.read())
        for version, places in candidates:
            if version == 2 and not _hands_down_controllers(places[0]):
                continue
            _remove_abandoned(places)
            made = _make(version, places, name, memory_bytes, max_tasks)
            if made is not None:
                return made
    except OSError:
        pass  # no /proc, or a cgroupfs this process may not read
    return None


def _remove_abandoned(places: list[Path]) -> None:
    """Remove the run cgroups of graders that are gone (killed outright, no time to remove
    theirs): their runs died with them, so the cgroups are empty. Named after their grader's
    PID, a live grader's are never touched."""
    for place in places:
        for directory in place.glob(f"{PREFIX}*"):
            grader = directory.name.removeprefix(PREFIX).split("-")[0]
            if not grader.isdigit():
                continue  # not one of ours
            try:
                os.kill(int(grader), 0)
            except ProcessLookupError:
                with contextlib.suppress(OSError):  # another grader removed it first
                    directory.rmdir()
            except PermissionError:
                pass  # alive, another user's


def _make(
    version: int, places: list[Path], name: str, memory_bytes: int, max_tasks: int
) -> RunCgroup | None:
    made: list[Path] = []
    try:
        if version == 2:
            made.append(_mkdir(places[0] / name))
            _write(made[0], "memory.max", memory_bytes)
            _write(made[0], "memory.swap.max", 0, optional=True)
            _write(made[0], "pids.max", max_tasks)
        else:
            memory, pids = places
            made.append(_mkdir(memory / name))
            _write(made[0], "memory.limit_in_bytes", memory_bytes)
            # Memory plus swap, set after memory alone: the kernel keeps memsw >= memory.
            _write(made[0], "memory.memsw.limit_in_bytes", memory_bytes, optional=True)
            made.append(_mkdir(pids / name))
            _write(made[1], "pids.max", max_tasks)
    except OSError:  # read-only, not ours to write, a limit the kernel refuses
        for directory in reversed(made):
            directory.rmdir()
        return None
    return RunCgroup(version, tuple(made))


def cgroup_parents(cgroups: str, mountinfo: str) -> list[tuple[int, list[Path]]]:
    """Where this process's run cgroups may go, from /proc/self/cgroup and /proc/self/mountinfo,
    best first: under its own v2 cgroup, then under its own v1 memory and pids cgroups (both
    needed); a hierarchy that is not mounted here, or whose mount does not show that cgroup,
    is left out."""
    own: dict[str, str] = {}  # controller ("" for v2) -> this process's cgroup path
    for line in cgroups.splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") if controllers else [""]:
            own[controller] = path
    mounts = _hierarchies(mountinfo)
    candidates = []
    unified = [_inside(mount, own[""]) for version, mount in mounts if version == 2 and "" in own]
    if unified and unified[0] is not None:
        candidates.append((2, [unified[0]]))
    places = []
    for controller in ("memory", "pids"):
        mounted = [m for version, m in mounts if version == 1 and controller in m.controllers]
        if mounted and controller in own and (place := _inside(mounted[0], own[controller])):
            places.append(place)
    if len(places) == 2:
        candidates.append((1, places))
    return candidates


def _hierarchies(mountinfo: str) -> list[tuple[int, Hierarchy]]:
    """The cgroup mounts in mountinfo, with their version."""
    found = []
    for line in mountinfo.splitlines():
        before, _, after = line.partition(" - ")
        fields, (fstype, _source, options) = before.split(), after.split()[:3]
        hierarchy = Hierarchy(Path(fields[4]), fields[3], frozenset(options.split(",")))
        if fstype in ("cgroup", "cgroup2"):
            found.append((1 if fstype == "cgroup" else 2, hierarchy))
    return found


def _inside(hierarchy: Hierarchy, path: str) -> Path | None:
    """The directory of cgroup `path` under the hierarchy's mount, None if the mount does not
    show it (a container that mounted only a subtree elsewhere)."""
    root = hierarchy.mount_root.rstrip("/")
    if path != root and not path.startswith(f"{root}/"):
        return None
    return hierarchy.mount_point / path[len(root) :].lstrip("/")


def _hands_down_controllers(parent: Path) -> bool:
    """Whether children of v2 cgroup `parent` get memory and pids, enabling them if need be:
    the kernel refuses that below the root to a cgroup holding processes (as the grader's does
    unless delegated a subtree), and where the hierarchy lacks them (they are v1's)."""
    needed = {"memory", "pids"}
    try:
        if not needed <= set((parent / "cgroup.controllers").read_text().split()):
            return False
        if not needed <= set((parent / "cgroup.subtree_control").read_text().split()):
            (parent / "cgroup.subtree_control").write_text("+memory +pids")
    except OSError:
        return False
    return True


def _mkdir(directory: Path) -> Path:
    directory.mkdir()
    return directory


def _write(directory: Path, name: str, value: int, *, optional: bool = False) -> None:
    """Write a limit; an `optional` one is skipped where the kernel has no such file (swap
    accounting off, or no swap controller)."""
    if optional and not (directory / name).exists():
        return
    (directory / name).write_text(str(value))


def _kill_if_member(pid: int, directory: Path) -> None:
    """SIGKILL `pid` if it is still in the run's cgroup: through a pidfd, so that a process that
    ended and whose number was reused outside is never signalled."""
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return  # ended already
    try:
        cgroup = Path(f"/proc/{pid}/cgroup").read_text()
        if any(line.endswith(f"/{directory.name}") for line in cgroup.splitlines()):
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
    except OSError:
        pass  # it ended meanwhile
    finally:
        os.close(pidfd)
