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
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

# Processes killed at the end of a run leave their cgroup within milliseconds; past this, one
# that cannot be killed (stuck in the kernel) keeps it, and the directory is left behind.
EMPTY_WITHIN_S = 10.0


@dataclass(frozen=True)
class Hierarchy:
    """Where a cgroup hierarchy is mounted and which controllers it carries."""

    version: int
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


def make_run_cgroup(name: str, memory_bytes: int, max_tasks: int) -> RunCgroup | None:
    """A fresh cgroup `name` bounding memory (swap included) and tasks, or None where none can be
    made here."""
    try:
        with open("/proc/self/cgroup") as cgroups, open("/proc/self/mountinfo") as mounts:
            parents = cgroup_parents(cgroups.read(), mounts.read())
    except OSError:
        return None
    if parents is None:
        return None
    version, places = parents
    made: list[Path] = []
    try:
        if version == 2:
            (parent,) = places
            _hand_down_controllers(parent)
            made.append(_mkdir(parent / name))
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
    except OSError:
        for directory in reversed(made):
            directory.rmdir()
        return None
    return RunCgroup(version, tuple(made))


def cgroup_parents(cgroups: str, mountinfo: str) -> tuple[int, list[Path]] | None:
    """Where this process's run cgroups go, from /proc/self/cgroup and /proc/self/mountinfo: its
    own v2 cgroup where that hierarchy has memory and pids, else its own v1 memory and pids
    cgroups; None if neither is mounted here."""
    hierarchies = _hierarchies(mountinfo)
    own: dict[str, str] = {}  # controller ("" for v2) -> this process's cgroup path
    for line in cgroups.splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") if controllers else [""]:
            own[controller] = path
    unified = [h for h in hierarchies if h.version == 2]
    if unified and "" in own and {"memory", "pids"} <= unified[0].controllers:
        place = _inside(unified[0], own[""])
        return None if place is None else (2, [place])
    places = []
    for controller in ("memory", "pids"):
        mounted = [h for h in hierarchies if h.version == 1 and controller in h.controllers]
        place = _inside(mounted[0], own[controller]) if mounted and controller in own else None
        if place is None:
            return None
        places.append(place)
    return 1, places


def _hierarchies(mountinfo: str) -> list[Hierarchy]:
    """The cgroup mounts in mountinfo; a v2 hierarchy's controllers are read from the mount."""
    found = []
    for line in mountinfo.splitlines():
        before, _, after = line.partition(" - ")
        fields, (fstype, _source, options) = before.split(), after.split()[:3]
        root, mount_point = fields[3], Path(fields[4])
        if fstype == "cgroup":
            found.append(Hierarchy(1, mount_point, root, frozenset(options.split(","))))
        elif fstype == "cgroup2":
            try:
                controllers = (mount_point / "cgroup.controllers").read_text().split()
            except OSError:
                controllers = []
            found.append(Hierarchy(2, mount_point, root, frozenset(controllers)))
    return found


def _inside(hierarchy: Hierarchy, path: str) -> Path | None:
    """The directory of cgroup `path` under the hierarchy's mount, None if the mount does not
    show it (a container that mounted only a subtree elsewhere)."""
    root = hierarchy.mount_root.rstrip("/")
    if path != root and not path.startswith(f"{root}/"):
        return None
    return hierarchy.mount_point / path[len(root) :].lstrip("/")


def _hand_down_controllers(parent: Path) -> None:
    """Let children of `parent` have memory and pids (raises where the kernel refuses: v2 keeps
    processes and controlled children apart below the root)."""
    enabled = (parent / "cgroup.subtree_control").read_text().split()
    if not {"memory", "pids"} <= set(enabled):
        (parent / "cgroup.subtree_control").write_text("+memory +pids")


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
