"""After the test session: stop and list every process that still carries its marker.

Every process the suite starts inherits GLIMPROUTER_TEST_SESSION from .ci/run, so whatever
outlived the session (a vLLM engine, a router, a kernel) is found by its environment, even one
that left the session's process tree. Exit status 1 when any was found.
"""

import os
import signal
import sys
import time

marker = ("GLIMPROUTER_TEST_SESSION=" + sys.argv[1]).encode()


def leftovers() -> dict[int, str]:
    found = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        if int(pid) == os.getpid():
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as environ:
                variables = environ.read().split(b"\0")
            with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                command = cmdline.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in variables:
            found[int(pid)] = command[:200]
    return found


left = leftovers()
for sig in (signal.SIGTERM, signal.SIGKILL):
    for pid in leftovers():
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 20
    while leftovers() and time.monotonic() < deadline:
        time.sleep(0.2)
if left:
    print("processes started by the test suite outlived it (now stopped):", file=sys.stderr)
    for pid, command in sorted(left.items()):
        print(f"  {pid} {command}", file=sys.stderr)
    sys.exit(1)
print("no process of the test suite is left running")
