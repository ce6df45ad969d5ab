"""What the sandbox tests need to know of the machine (whether namespaces can be made), and the
hostile programs and graders more than one of them runs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from glimprouter.evals.grading import SandboxLimits
from tests.paths import REPO

# For programs meant to reach the wall-clock limit.
FAST = SandboxLimits(time_s=2.0)
# For programs that end by themselves, beside CPU hogs on a busy machine: their limit only turns a
# hang into a failure, never a guess at how long they take.
ROOMY = SandboxLimits(time_s=600.0)


def _namespaces_allowed() -> bool:
    """Whether this process may make the namespaces sandbox_child.py makes: root, CAP_SYS_ADMIN."""
    flags = 0x00020000 | 0x08000000 | 0x20000000 | 0x40000000  # CLONE_NEWNS, IPC, PID, NET
    probe = f"import ctypes, os\nos._exit(ctypes.CDLL(None).unshare({flags}) != 0)"
    return os.geteuid() == 0 and subprocess.run([sys.executable, "-c", probe]).returncode == 0


CONFINED = _namespaces_allowed()


needs_namespaces = pytest.mark.skipif(
    not CONFINED,
    reason="needs root with namespaces (CAP_SYS_ADMIN): without, see sandbox.py's docstring",
)


FORK_BOMB = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"


# Run from a grader without CAP_SYS_ADMIN, as in Docker's default profile or a rootless
# container; a normal user lacks it already.
GRADER = (
    "import asyncio, sys\n"
    "from glimprouter.evals.grading.sandbox import SandboxLimits, run_python\n"
    f"limits = SandboxLimits(time_s={ROOMY.time_s}, allow_unconfined=sys.argv[1] == 'accept')\n"
    "print(asyncio.run(run_python('print(6 * 7)', '', limits=limits)).stdout, end='')\n"
)


def grader_without_namespaces(mode: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """Run GRADER in `mode` ("accept" or "refuse"), or another program, as a grader would run
    where namespaces cannot be made."""
    program = [GRADER, mode] if mode in ("accept", "refuse") else [mode]
    command = [sys.executable, "-c", *program]
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("needs setpriv (util-linux) to drop CAP_SYS_ADMIN")
        command = ["setpriv", "--bounding-set=-sys_admin", "--inh-caps=-sys_admin", *command]
    env = os.environ | {"PYTHONPATH": str(REPO)} | env
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
