"""The core install: `glimprouter --help`, `ask --help` and the graph need no extra, and a command
whose extra is missing says which to install. Missing extras are simulated in a subprocess whose
imports of every package of an extra fail, as they would in a venv of `pip install glimprouter`."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from glimprouter.extras import EXTRA_OF

# Installed beside the core in the test venv, imported by no command's --help. psutil is left out
# of the sys.modules check (langsmith imports it when present) but blocked below like the rest.
FORBIDDEN = sorted({*EXTRA_OF, "vllm", "torch", "pandas", "pyarrow"} - {"psutil"})

BLOCKER = """
import importlib.abc, json, sys
BLOCKED = set(json.loads(sys.argv[1]))
class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if any(name == b or name.startswith(b + ".") for b in BLOCKED):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Blocker())
"""


def run_python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize("argv", [["--help"], ["ask", "--help"]])
def test_help_imports_only_the_core(argv: list[str]) -> None:
    code = (
        "import json, sys\n"
        "from glimprouter.cli import main\n"
        "try:\n    main(json.loads(sys.argv[1]))\nexcept SystemExit:\n    pass\n"
        "print(json.dumps(sorted(sys.modules)), file=sys.stderr)\n"
    )
    done = run_python(code, json.dumps(argv))
    loaded = json.loads(done.stderr.strip().splitlines()[-1])
    assert "usage: glimprouter" in done.stdout
    assert [m for m in loaded if m.split(".")[0] in FORBIDDEN or m in FORBIDDEN] == []


def blocked(code: str) -> subprocess.CompletedProcess[str]:
    every_extra = json.dumps(sorted({*EXTRA_OF, "vllm", "torch"}))
    return run_python(BLOCKER + code, every_extra)


COMMANDS = [
    *("ask", "serve", "demo", "eval", "sweep", "report", "calibrate", "serve-router", "threads")
]


def test_every_help_runs_without_extras() -> None:
    done = blocked(  # one interpreter for all: each command's --help ends in SystemExit(0)
        "import contextlib\nfrom glimprouter.cli import main\n"
        f"for command in {COMMANDS!r}:\n"
        "    with contextlib.suppress(SystemExit):\n"
        "        main([command, '--help'])\n"
    )
    assert done.returncode == 0, done.stderr
    for command in COMMANDS:
        assert f"usage: glimprouter {command}" in done.stdout


def test_graph_builds_without_extras() -> None:
    done = blocked(
        "from glimprouter import RouterContext, build_graph, durable_graph\n"
        "from glimprouter.ask import ask\n"
        "print(sorted(build_graph().get_graph().nodes))"
    )
    assert done.returncode == 0, done.stderr
    assert "glimpse" in done.stdout


@pytest.mark.parametrize(
    ("argv", "extra"),
    [
        (["report", "."], "evals"),
        (["serve-router", "--allow-unauthenticated"], "serve"),
        (["eval", "--dataset", "aime24", "--output", "OUT"], "evals"),
    ],
)
def test_missing_extra_is_one_line(argv: list[str], extra: str, tmp_path) -> None:
    argv = [str(tmp_path) if arg == "OUT" else arg for arg in argv]
    done = blocked(f"from glimprouter.cli import main\nraise SystemExit(main({argv!r}))")
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    assert f'pip install "glimprouter[{extra}]"' in done.stderr
