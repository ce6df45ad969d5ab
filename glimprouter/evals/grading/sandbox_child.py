"""The sandboxed process: confine itself, then run solution.py from its working directory.

Started by sandbox.py as `python -I sandbox_child.py SETTINGS_JSON` and never imported, so it
depends on the standard library only. The confinement happens here, in a fresh single-threaded
interpreter, rather than in a preexec_fn of the grading process (whose threads make code
between fork and exec unsafe).
"""

import ctypes
import json
import os
import resource
import socket
import sys

CLONE_NEWNET = 0x40000000
PR_SET_KEEPCAPS = 8
CAP_DAC_READ_SEARCH = 2
LINUX_CAPABILITY_VERSION_3 = 0x20080522
NOBODY = 65534

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


def isolate_network(libc) -> None:
    """A new network namespace (only a down loopback), else the socket stand-in."""
    if libc.unshare(CLONE_NEWNET) != 0:
        socket.socket = NoNetworkSocket


def drop_root(libc) -> None:
    """As root, become `nobody`: the process limit binds only non-root users. The right to read
    any file is kept so the interpreter's own modules (possibly under /root) stay importable."""
    if os.geteuid() != 0:
        return
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


def limit(settings: dict) -> None:
    memory = settings["memory_mb"] << 20
    cpu = int(settings["time_s"]) + 1  # a backstop: the parent enforces the wall-clock limit
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
    resource.setrlimit(resource.RLIMIT_FSIZE, (settings["output_mb"] << 20,) * 2)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    # Relative to what the user runs already: the grader, servers, other sandboxes, and the
    # zombies a container whose init does not reap them keeps after a forking solution.
    processes = tasks_of(os.getuid()) + settings["max_processes"]
    resource.setrlimit(resource.RLIMIT_NPROC, (processes, processes))


def run(settings: dict) -> None:
    with open("solution.py", encoding="utf-8") as file:
        source = file.read()
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


def main() -> None:
    settings = json.loads(sys.argv[1])
    libc = ctypes.CDLL(None, use_errno=True)
    isolate_network(libc)
    drop_root(libc)
    limit(settings)
    run(settings)


if __name__ == "__main__":
    main()
