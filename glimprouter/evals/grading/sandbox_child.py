"""The sandboxed process: confine itself, then run solution.py from its working directory.

Started by sandbox.py as `python -I sandbox_child.py SETTINGS_JSON` and never imported, so it
depends on the standard library only. The confinement happens here, in a fresh single-threaded
interpreter, rather than in a preexec_fn of the grading process (whose threads make code
between fork and exec unsafe).

As root, where namespaces can be made, the run is three processes: this one stays outside and
passes on how the solution ended; its child, the init (PID 1) of new PID, mount, network and IPC
namespaces, builds the run's file system, chroots into it and reaps; the init's child turns into
`nobody`, without any capability, and runs the solution. When the init ends (after the solution,
or killed with the session or the grader) the kernel kills whatever is left in the namespace.
Where sandbox.py made a cgroup for the run (settings["cgroup_procs"]), the solution's process
joins it while still root (`nobody` may not), so all it starts is counted there, and only that.

Before the solution starts, one line on the status descriptor (settings["status_fd"]) tells the
grader how it is confined ("confined", or "unconfined" where the caller accepted that), or why it
could not be ("refused: ...", "failed: ..."); the descriptor is closed before the solution runs,
so the solution cannot write there. Where namespaces cannot be made and the caller did not accept
the risk (settings["allow_unconfined"]), the solution never runs.
"""

import ctypes
import json
import os
import resource
import signal
import socket
import sys

CLONE_NEWNS = 0x00020000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
PR_SET_PDEATHSIG = 1
PR_SET_KEEPCAPS = 8
PR_SET_NO_NEW_PRIVS = 38
CAP_DAC_READ_SEARCH = 2
LINUX_CAPABILITY_VERSION_3 = 0x20080522
NOBODY = 65534

# All the solution sees of the host's files (read-only), besides the interpreter's directories and
# its working directory: what the dynamic loader and the standard library read.
SYSTEM_DIRS = ("/bin", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/sbin", "/usr")
DEVICES = ("null", "zero", "full", "random", "urandom")
DEVICE_LINKS = {"fd": "/proc/self/fd", "stdin": "fd/0", "stdout": "fd/1", "stderr": "fd/2"}

# LiveCodeBench runs every solution after these imports (lcb_runner/evaluation/testing_util.py),
# so solutions that use, say, List or defaultdict without importing them pass there: same here.
HEADER_MODULES = (
    "string",
    "re",
    "datetime",
    "collections",
    "heapq",
    "bisect",
    "copy",
    "math",
    "random",
    "statistics",
    "itertools",
    "functools",
    "operator",
    "io",
    "sys",
    "json",
    "builtins",
    "typing",
)
HEADER = (
    "".join(f"from {module} import *\n" for module in HEADER_MODULES)
    + "".join(f"import {module}\n" for module in HEADER_MODULES[:-2])
    + "sys.setrecursionlimit(50000)\n"
)


class NoNetworkSocket(socket.socket):
    """Stands in for socket.socket where no network namespace could be made (not root): a
    weaker guard, which code calling the _socket module or os-level syscalls gets around."""

    def __init__(self, *args, **kwargs):
        raise PermissionError("network access is disabled in the grading sandbox")


# How the child tells the grader that the run could not be confined: the status line says why.
SANDBOX_FAILED = 125


def report(settings: dict, status: str) -> None:
    """Write the status line and close the descriptor (see the module's docstring)."""
    fd = settings["status_fd"]
    os.write(fd, status.encode() + b"\n")
    os.close(fd)


def open_cgroup(settings: dict) -> list[int]:
    """Descriptors of the run's cgroup.procs files (sandbox.py made the cgroup), opened now:
    the solution's process joins through them from inside its root, where /sys is not."""
    try:
        return [os.open(path, os.O_WRONLY) for path in settings["cgroup_procs"]]
    except OSError as error:
        report(settings, f"failed: cannot open the run's cgroup: {error}")
        os._exit(SANDBOX_FAILED)


def join_cgroup(settings: dict, cgroup: list[int]) -> None:
    """Move this process, still root, into the run's cgroup: all it starts is counted there."""
    try:
        for fd in cgroup:
            os.write(fd, b"0")  # 0: the writing process
            os.close(fd)
    except OSError as error:
        report(settings, f"failed: cannot join the run's cgroup: {error}")
        os._exit(SANDBOX_FAILED)


def confine(libc, settings: dict, source: str, cgroup: list[int]) -> int | None:
    """In the namespaces just made, fork the init and from it the solution's process, the only
    one to return: in the run's cgroup, as `nobody`, with the number of tasks `nobody` runs,
    itself included, where no cgroup counts them (None)."""
    init = os.fork()
    if init:
        for fd in (settings["status_fd"], *cgroup):  # only the init and the solution use them
            os.close(fd)
        os._exit(exit_code(os.waitpid(init, 0)[1]))
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # and the namespace with it
    running = None if cgroup else tasks_of(NOBODY) + 1  # before /proc shows only this namespace
    try:
        build_root(libc, settings, source)
    except OSError as error:
        report(settings, f"failed: {error}")
        os._exit(SANDBOX_FAILED)
    solution = os.fork()
    if solution:
        for fd in (settings["status_fd"], *cgroup):
            os.close(fd)
        while True:  # as init, also reap the orphans the solution leaves
            pid, status = os.wait()
            if pid == solution:
                os._exit(exit_code(status))
    join_cgroup(settings, cgroup)
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)  # and with it go all capabilities
    return running


def exit_code(status: int) -> int:
    """The exit code that passes a wait status on: death by signal n as 128 + n, as a shell
    reports it (an init cannot die of a signal it sends itself)."""
    code = os.waitstatus_to_exitcode(status)
    return code if code >= 0 else 128 - code


def build_root(libc, settings: dict, source: str) -> None:
    """Chroot into a fresh tmpfs holding read-only binds of the system directories and the
    interpreter's, the harmless devices, this PID namespace's /proc and, at the working
    directory's path, a private tmpfs of its own (writable by `nobody`, bounded in bytes and in
    files) holding solution.py: nothing the solution writes lands on the host's disk or RAM
    beyond those bounds. Its output goes to the descriptors the grader opened."""
    work = os.getcwd()
    mount(libc, None, "/", None, MS_REC | MS_PRIVATE)  # so that nothing below reaches the host
    mount(libc, "tmpfs", work, "tmpfs", MS_NOSUID | MS_NODEV, "mode=755,size=1m")
    kept: list[str] = []
    for path in sorted({*SYSTEM_DIRS, sys.base_prefix, sys.prefix}):
        if os.path.islink(path):  # /bin -> usr/bin where /usr is merged
            os.symlink(os.readlink(path), work + path)
        elif os.path.isdir(path) and not any(path.startswith(f"{k}/") for k in kept):
            kept.append(path)
            bind(libc, path, work + path, read_only=True)
    os.makedirs(work + work)
    bounds = f"size={settings['files_mb']}m,nr_inodes={settings['max_files']}"
    owner = f"uid={NOBODY},gid={NOBODY},mode=700"
    mount(libc, "tmpfs", work + work, "tmpfs", MS_NOSUID | MS_NODEV, f"{bounds},{owner}")
    with open(f"{work}{work}/solution.py", "x", encoding="utf-8") as file:
        file.write(source)
    os.mkdir(work + "/dev")
    for name in DEVICES:
        open(f"{work}/dev/{name}", "x").close()
        bind(libc, f"/dev/{name}", f"{work}/dev/{name}", read_only=False)
    for name, target in DEVICE_LINKS.items():
        os.symlink(target, f"{work}/dev/{name}")
    os.mkdir(work + "/proc")
    mount(libc, "proc", work + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    os.chroot(work)
    os.chdir(work)


def bind(libc, source: str, target: str, *, read_only: bool) -> None:
    """Bind one mount's `source` alone: with the mounts below it (MS_REC), the working directory
    would bring along the tmpfs over it."""
    if os.path.isdir(source):
        os.makedirs(target, exist_ok=True)
    mount(libc, source, target, None, MS_BIND)
    if read_only:  # a bind has the flags of the source's mount until remounted
        mount(libc, None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)


def mount(
    libc, source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None
) -> None:
    arguments = (source, target, fstype)
    encoded = [None if text is None else text.encode() for text in arguments]
    if libc.mount(*encoded, ctypes.c_ulong(flags), data and data.encode()) != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"sandbox: cannot mount {target}: {os.strerror(error)}")


def drop_root_keeping_reads(libc) -> None:
    """As root without namespaces, become `nobody` (the process limit binds only non-root users),
    keeping the right to read any file so the interpreter's modules (maybe under /root) stay
    importable: the user's files stay readable too."""
    os.chown(".", NOBODY, NOBODY)
    libc.prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0)
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)
    header = (ctypes.c_uint32 * 2)(LINUX_CAPABILITY_VERSION_3, 0)
    read_only = 1 << CAP_DAC_READ_SEARCH
    data = (ctypes.c_uint32 * 6)(read_only, read_only, 0, 0, 0, 0)  # effective, permitted, ...
    libc.capset(header, data)


def tasks_of(uid: int) -> int:
    """Processes and threads the user runs now: RLIMIT_NPROC counts all of them."""
    count = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/status") as status:
                fields = dict(line.split(":", 1) for line in status if ":" in line)
        except OSError:
            continue  # the process ended meanwhile
        if int(fields["Uid"].split()[0]) == uid:
            count += int(fields["Threads"])
    return count


def limit(settings: dict, running: int | None) -> None:
    """Per process; the number of tasks also per user, `running` being how many it runs now,
    unless the run's cgroup bounds them (None): that count is exact, and per run."""
    memory = settings["memory_mb"] << 20
    cpu = int(settings["time_s"]) + 1  # a backstop: the parent enforces the wall-clock limit
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))  # SIGXCPU, then SIGKILL
    resource.setrlimit(resource.RLIMIT_FSIZE, (settings["output_mb"] << 20,) * 2)
    resource.setrlimit(resource.RLIMIT_NOFILE, (settings["open_files"],) * 2)
    # Relative to what the user runs already: the grader, servers, other sandboxes, and the
    # zombies a container whose init does not reap them keeps after a forking solution.
    if running is not None:
        processes = running + settings["max_processes"]
        resource.setrlimit(resource.RLIMIT_NPROC, (processes, processes))


def run(settings: dict, source: str) -> None:
    fn_name = settings["fn_name"]
    # LiveCodeBench imports functional solutions as a module, so their __main__ blocks stay off.
    namespace = {"__name__": "__main__" if fn_name is None else "solution"}
    exec(HEADER, namespace)
    code = compile(source, "solution.py", "exec")
    if fn_name is None:
        try:
            exec(code, namespace)
        except SystemExit:
            pass  # as in LiveCodeBench: exit() ends the program, its output is still graded
        return
    arguments = [json.loads(line) for line in sys.stdin.read().rstrip("\n").split("\n")]
    result_stream, sys.stdout = sys.stdout, open(os.devnull, "w")  # the solution's own prints
    exec(code, namespace)
    owner = namespace["Solution"]() if "class Solution" in source else None
    method = getattr(owner, fn_name) if owner is not None else namespace[fn_name]
    result = method(*arguments)
    if isinstance(result, tuple):
        result = list(result)  # as in LiveCodeBench: tuples stand for lists
    result_stream.write(json.dumps(result))


def isolation_refused(libc) -> str | None:
    """Why the namespaces cannot be made (and leave the process in them if they can), or None."""
    if os.geteuid() != 0:
        return "not running as root"
    namespaces = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC
    if libc.unshare(namespaces) != 0:
        error = os.strerror(ctypes.get_errno())
        return f"unshare of PID, mount, network and IPC namespaces failed: {error}"
    return None


def main() -> None:
    settings = json.loads(sys.argv[1])
    libc = ctypes.CDLL(None, use_errno=True)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # should the grader die first
    libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)  # setuid programs (sudo, su) stay ours
    with open("solution.py", encoding="utf-8") as file:
        source = file.read()
    cgroup = open_cgroup(settings)
    refused = isolation_refused(libc)
    if refused is None:
        running = confine(libc, settings, source, cgroup)
        status = "confined"
    elif not settings["allow_unconfined"]:
        report(settings, f"refused: {refused}")
        os._exit(SANDBOX_FAILED)
    else:
        socket.socket = NoNetworkSocket
        join_cgroup(settings, cgroup)
        if os.geteuid() == 0:
            drop_root_keeping_reads(libc)
        running = None if cgroup else tasks_of(os.getuid())
        status = "unconfined"
    limit(settings, running)
    report(settings, status)
    run(settings, source)


if __name__ == "__main__":
    main()
