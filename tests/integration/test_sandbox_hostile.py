"""Hostile programs graded as solutions: each is contained, reported as a failed test, and the
grading goes on. Each problem's one test expects what the program prints only if it escaped.

Most protections need root with namespaces (the run's own PID, mount, network and IPC namespaces,
the user `nobody`): their tests skip elsewhere, as sandbox.py says what is not contained then.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal
import socket
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from glimprouter.evals.datasets import CodeTest, Problem
from glimprouter.evals.grading import Grade, SandboxLimits, grade, sandbox
from tests.paths import REPO
from tests.processes import wait_until_async
from tests.sandboxes import CONFINED, FAST, FORK_BOMB, ROOMY, needs_namespaces

SECOND_LARGEST = Problem(
    "test", "abc365_b", "q", "code", "", tests=(CodeTest("4\n8 2 5 1\n", "3\n", "stdin"),)
)
SECOND_LARGEST_SOLUTION = (
    "input()\na = list(map(int, input().split()))\nprint(a.index(sorted(a)[-2]) + 1)"
)


# Should the sandbox ever fail to drop root, kill(-1) would take the machine down: refuse then.
NOT_AS_ROOT = (
    "import os, signal, time\nif os.getuid() == 0:\n"
    "    raise RuntimeError('not killing every process as root')\n"
)


def _code(source: str) -> str:
    return f"Here it is:\n```python\n{source}\n```\n"


def _expecting(output: str) -> Problem:
    return Problem("test", "hostile", "q", "code", "", tests=(CodeTest("", output, "stdin"),))


async def _hostile(source: str, escaped: str = "escaped", limits: SandboxLimits = ROOMY) -> Grade:
    """Grade `source`, which prints `escaped` only if it got out; it must fail the test."""
    compile(source, "solution.py", "exec")  # contained by its own typo would prove nothing
    result = await grade(_expecting(escaped), _code(source), limits=limits)
    assert not result.correct, result.detail
    assert result.detail.startswith("test 1/1: "), result.detail
    return result


@pytest.fixture(autouse=True)
def own_temporary_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test's runs in its tmp_path, which tells them from other sandboxes on the machine."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))


def _live_sandbox_processes() -> list[str]:
    """Processes still running sandbox_child.py for this test (zombies have no command line)."""
    home = f"HOME={tempfile.gettempdir()}/".encode()
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            process = Path(f"/proc/{pid}")
            if b"sandbox_child.py" in (process / "cmdline").read_bytes():
                if home in (process / "environ").read_bytes():
                    found.append(pid)
        except OSError:
            continue
    return found


async def _no_sandbox_processes_left() -> None:
    # SIGKILLed processes take a moment to disappear.
    await wait_until_async(lambda: not _live_sandbox_processes(), 60, "no sandbox process left")


async def test_fork_bomb_is_contained() -> None:
    result = await _hostile(FORK_BOMB, limits=SandboxLimits(time_s=1.0, max_processes=4))
    assert "time limit exceeded" in result.detail
    await _no_sandbox_processes_left()


async def test_forks_stop_at_the_process_limit() -> None:
    source = (
        "import os, time\nforked = 0\nwhile forked < 64:\n    try:\n        if os.fork() == 0:\n"
        "            time.sleep(10)\n            os._exit(0)\n    except OSError:\n        break\n"
        "    forked += 1\nprint('escaped' if forked == 64 else f'forked {forked}')"
    )
    result = await _hostile(source, limits=replace(ROOMY, max_processes=4))
    assert result.detail == "test 1/1: wrong answer: line 1: 'forked 4' instead of 'escaped'"
    await _no_sandbox_processes_left()


async def test_a_sleeping_program_is_stopped_at_the_wall_clock_limit() -> None:
    # It uses no CPU time, so only the wall clock stops it: fail rather than hang without that.
    sleeper = "import time\nwhile True:\n    time.sleep(1)"
    result = await asyncio.wait_for(_hostile(sleeper, limits=FAST), 20)
    assert result.detail == "test 1/1: time limit exceeded (2 s)"


@needs_namespaces
async def test_shared_memory_does_not_outlive_the_run() -> None:
    before = _sysvipc_lines()
    source = (
        "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        "if libc.shmget(0, 1 << 20, 0o1600) < 0:\n"  # IPC_PRIVATE, IPC_CREAT | 0o600
        "    raise OSError(ctypes.get_errno(), 'shmget')\nprint('made')"
    )
    result = await _hostile(source)
    assert result.detail == "test 1/1: wrong answer: line 1: 'made' instead of 'escaped'"
    left = _sysvipc_lines() - before
    for line in left:  # IPC_RMID: no leak on the machine should the test fail
        ctypes.CDLL(None).shmctl(int(line.split()[1]), 0, None)
    assert left == set()


def _sysvipc_lines() -> set[str]:
    """The shared memory segments of `nobody`, whom the runs become."""
    lines = Path("/proc/sysvipc/shm").read_text().splitlines()[1:]
    return {line for line in lines if line.split()[7] == "65534"}  # the column uid


@needs_namespaces
async def test_a_daemon_does_not_outlive_the_run() -> None:
    # A new session escapes the kill of the run's session; the PID namespace does not.
    source = "import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(10)"
    result = await _hostile(source)
    assert "wrong answer" in result.detail
    await _no_sandbox_processes_left()


@needs_namespaces
async def test_writes_outside_the_working_directory_stay_off_the_host() -> None:
    name = f"glimprouter-sandbox-escape-{uuid.uuid4().hex}"
    targets = [
        Path("/tmp", name),
        Path("/var/tmp", name),
        Path("/dev/shm", name),
        Path(tempfile.gettempdir(), name),
        Path.home() / ".cache" / name,
        REPO / name,
    ]
    paths = [*map(str, targets), f"../{name}"]  # the last beside the working directory
    source = (
        f"errors = []\nfor path in {paths!r}:\n    try:\n"
        "        with open(path, 'w') as file:\n            file.write('escaped')\n"
        "    except OSError as error:\n        errors.append(error)\n"
        f"if len(errors) < {len(paths)}:\n    print('escaped')\nelse:\n    raise errors[0]"
    )
    try:
        result = await _hostile(source)
        assert "runtime error: " in result.detail and name in result.detail, result.detail
        assert [path for path in targets if path.exists()] == []
    finally:
        for path in targets:
            path.unlink(missing_ok=True)


@pytest.fixture
def secret() -> Iterator[tuple[Path, str]]:
    """A file only the user may read, in the user's real home, and its content."""
    path = Path.home() / ".cache" / "glimprouter" / f"sandbox-test-secret-{uuid.uuid4().hex}"
    content = f"secret-{uuid.uuid4().hex}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(content)
    yield path, content
    path.unlink()


async def _assert_not_leaked(source: str, content: str) -> None:
    """Graded, `source` fails, and neither its output nor the grade's detail holds `content`."""
    result = await _hostile(source, escaped=content)
    run = await sandbox.run_python(source, "", limits=ROOMY)
    assert content not in run.stdout + run.stderr + result.detail, run


@needs_namespaces
async def test_the_users_home_cannot_be_read(secret: tuple[Path, str]) -> None:
    path, content = secret
    home = str(Path.home())
    source = (
        "import os\n"
        f"for folder in ('/', {home!r}, {str(path.parent)!r}):\n    try:\n"
        "        print(os.listdir(folder))\n    except OSError as error:\n        print(error)\n"
        f"for name in ('.bash_history', '.ssh/id_rsa', '.netrc'):\n    try:\n"
        f"        print(open(os.path.join({home!r}, name)).read())\n"
        "    except OSError as error:\n        print(error)\n"
        f"print(open({str(path)!r}).read())"
    )
    await _assert_not_leaked(source, content)


async def test_output_is_not_read_through_the_solutions_symlinks(
    secret: tuple[Path, str],
) -> None:
    path, content = secret
    source = (
        "import os\nfor name in ('stdout', 'stderr'):\n    os.remove(name)\n"
        f"    os.symlink({str(path)!r}, name)\nos._exit(1)"
    )
    await _assert_not_leaked(source, content)


@pytest.fixture
def listeners() -> Iterator[dict[str, object]]:
    """Servers the sandbox must not reach: TCP on loopback, a Unix socket anyone may connect to,
    and an abstract Unix socket."""
    unix_path = Path("/tmp", f"glimprouter-test-{uuid.uuid4().hex}.sock")
    with (
        socket.create_server(("127.0.0.1", 0)) as tcp,
        socket.socket(socket.AF_UNIX) as unix,
        socket.socket(socket.AF_UNIX) as abstract,
    ):
        unix.bind(str(unix_path))
        unix_path.chmod(0o777)
        abstract.bind(f"\0glimprouter-test-{uuid.uuid4().hex}")
        for server in (unix, abstract):
            server.listen()
        yield {
            "tcp": ("127.0.0.1", tcp.getsockname()[1]),
            "unix": str(unix_path),
            "abstract": abstract.getsockname(),
        }
    unix_path.unlink()


CONNECTIONS = {
    "socket module": "import socket\nsocket.create_connection({tcp!r}, 1)",
    "_socket module": (
        "import _socket\nconnection = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)\n"
        "connection.settimeout(1)\nconnection.connect({tcp!r})"
    ),
    "another process": (
        "import subprocess, sys\nsubprocess.run([sys.executable, '-c', "
        '"import socket; socket.create_connection({tcp!r}, 1)"], check=True)'
    ),
    "unix socket": "import socket\nsocket.socket(socket.AF_UNIX).connect({unix!r})",
    "abstract unix socket": "import socket\nsocket.socket(socket.AF_UNIX).connect({abstract!r})",
}


@pytest.mark.parametrize("way", CONNECTIONS)
async def test_code_has_no_network(way: str, listeners: dict[str, object]) -> None:
    if way != "socket module" and not CONFINED:
        pytest.skip("needs root with namespaces: without, only the socket module is stopped")
    source = CONNECTIONS[way].format(**listeners) + "\nprint('escaped')"
    result = await _hostile(source)
    assert "runtime error" in result.detail, result.detail


async def test_code_does_not_see_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret")
    source = "import os\nprint(os.environ.get('OPENAI_API_KEY'), os.environ['HOME'] == os.getcwd())"
    result = await grade(_expecting("None True"), _code(source), limits=ROOMY)
    assert result.correct, result.detail


async def _grading_still_works() -> None:
    result = await grade(SECOND_LARGEST, _code(SECOND_LARGEST_SOLUTION), limits=ROOMY)
    assert result.correct, result.detail


@needs_namespaces
@pytest.mark.parametrize(
    ("kill", "error"),
    [
        pytest.param("os.kill(os.getppid(), signal.SIGKILL)", "PermissionError", id="parent"),
        pytest.param(f"os.kill({os.getpid()}, signal.SIGKILL)", "ProcessLookupError", id="grader"),
        pytest.param(  # its process group holds the processes that started it: only it dies
            "os.killpg(os.getpgid(0), signal.SIGKILL)", "killed by signal 9", id="group"
        ),
    ],
)
async def test_killing_the_parent_or_the_grader(kill: str, error: str) -> None:
    result = await _hostile(f"import os, signal\n{kill}\nprint('escaped')")
    assert result.detail.startswith(f"test 1/1: runtime error: {error}"), result.detail
    await _grading_still_works()


SIGUSR1_BIT = 1 << (signal.SIGUSR1 - 1)


def _runs_catching_sigusr1() -> list[int]:
    """This test's confined solution processes that have a SIGUSR1 handler in place."""
    found = []
    for pid in map(int, _live_sandbox_processes()):
        try:
            status = dict(
                line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
            )
        except OSError:
            continue
        if int(status["SigCgt"], 16) & SIGUSR1_BIT:
            found.append(pid)
    return found


@needs_namespaces
async def test_killing_every_process_spares_other_runs() -> None:
    hostile = f"{NOT_AS_ROOT}os.kill(-1, signal.SIGKILL)\nprint('escaped')"
    # The bystander waits, alive, until the test has let the killer loose and then signals it.
    bystander = (
        "import signal, sys, time\n"
        "def done(*_):\n    print('alive')\n    sys.exit(0)\n"
        "signal.signal(signal.SIGUSR1, done)\nwhile True:\n    time.sleep(0.01)"
    )
    waiting = asyncio.ensure_future(grade(_expecting("alive"), _code(bystander), limits=ROOMY))
    try:
        (pid,) = await wait_until_async(_runs_catching_sigusr1, 60, "the bystander waiting")
        killer = await _hostile(hostile, limits=ROOMY)
        os.kill(pid, signal.SIGUSR1)
        other = await waiting
    finally:
        waiting.cancel()
    assert killer.detail.startswith("test 1/1: runtime error: ProcessLookupError"), killer.detail
    assert other.correct, other.detail
    await _grading_still_works()


async def test_hostile_programs_do_not_stop_the_grading() -> None:
    """As an eval with --concurrency grades them: hostile answers among good ones."""
    hostile = [
        "while True:\n    pass",
        "hog = bytearray(4 << 30)",
        FORK_BOMB,
        "import sys\nsys.setrecursionlimit(10**9)\ndef f(n):\n    return f(n + 1)\nf(0)",
    ]
    if CONFINED:  # otherwise it would kill the user's (or `nobody`'s) processes, these runs too
        hostile.append(f"{NOT_AS_ROOT}os.kill(-1, signal.SIGKILL)\nprint(3)")
    runs = [(SECOND_LARGEST_SOLUTION, ROOMY)] * 4
    runs += [(source, SandboxLimits(time_s=2.0, max_processes=4)) for source in hostile]
    grades = await asyncio.gather(
        *(grade(SECOND_LARGEST, _code(source), limits=limits) for source, limits in runs)
    )
    assert [g.correct for g in grades] == [True] * 4 + [False] * len(hostile), grades
    await _grading_still_works()


@needs_namespaces
async def test_runs_end_with_the_grader(tmp_path: Path) -> None:
    """A grader killed outright (kill -9, the OOM killer) takes its runs along."""
    grader = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "import asyncio, os, sys\nsys.path.insert(0, sys.argv[1])\nimport sandbox\n"
        "sandbox.CHILD = os.environ['CHILD']\n"
        "asyncio.run(sandbox.run_python('import time\\ntime.sleep(60)', ''))",
        str(Path(sandbox.__file__).parent),
        # CHILD in the environment: in its command line the grader would look like a run.
        env=os.environ | {"CHILD": str(sandbox.CHILD), "TMPDIR": str(tmp_path)},
    )
    try:
        await wait_until_async(_confined_runs, 60, "the grader's run confined as nobody")
    finally:
        grader.kill()
        await grader.wait()
    await _no_sandbox_processes_left()


def _confined_runs() -> list[str]:
    """This test's sandbox processes that already run as `nobody` (the solution's process)."""
    confined = []
    for pid in _live_sandbox_processes():
        try:
            uids = next(
                line
                for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                if line.startswith("Uid:")
            )
        except (OSError, StopIteration):
            continue
        if uids.split()[1] == "65534":
            confined.append(pid)
    return confined
