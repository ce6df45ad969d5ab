"""The sandbox fails closed: it refuses to run code it cannot isolate (unless told to accept the
risk), a run it fails to confine is an error rather than a wrong answer, and a confined run's
files, open descriptors and processes are bounded."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from glimprouter.evals.datasets import CodeTest, Problem
from glimprouter.evals.grading import SandboxLimits, grade
from glimprouter.evals.grading.sandbox import SandboxUnavailable, run_python
from tests.fakes import fake_model_server
from tests.sandboxes import ROOMY, grader_without_namespaces, needs_namespaces


def test_code_that_cannot_be_isolated_does_not_run() -> None:
    refused = grader_without_namespaces("refuse", {"GLIMPROUTER_ALLOW_UNCONFINED_CODE": "0"})
    assert refused.returncode != 0 and refused.stdout == ""
    last = refused.stderr.strip().splitlines()[-1]
    assert last.startswith("glimprouter.evals.grading.sandbox.SandboxUnavailable: ")
    assert "--allow-unconfined-code" in last and "GLIMPROUTER_ALLOW_UNCONFINED_CODE=1" in last


@pytest.mark.parametrize("how", ["setting", "environment"])
def test_the_risk_can_be_accepted_explicitly(how: str) -> None:
    if how == "setting":
        accepted = grader_without_namespaces("accept", {"GLIMPROUTER_ALLOW_UNCONFINED_CODE": "0"})
    else:
        accepted = grader_without_namespaces("refuse", {"GLIMPROUTER_ALLOW_UNCONFINED_CODE": "1"})
    assert accepted.returncode == 0, accepted.stderr
    assert accepted.stdout == "42\n"


@needs_namespaces
async def test_a_run_that_cannot_be_confined_is_an_error_not_a_wrong_answer() -> None:
    problem = Problem("test", "p", "q", "code", "", tests=(CodeTest("", "1\n", "stdin"),))
    broken = replace(ROOMY, max_files=-1)  # a tmpfs the kernel refuses to mount
    with pytest.raises(SandboxUnavailable, match="could not confine a run.*cannot mount"):
        await grade(problem, "```python\nprint(1)\n```", limits=broken)


@needs_namespaces
@pytest.mark.parametrize(
    ("source", "limits", "error"),
    [
        pytest.param(
            "open('big', 'wb').write(b'x' * (3 << 20))",
            replace(ROOMY, files_mb=2),
            "No space left on device",
            id="bytes",
        ),
        pytest.param(
            "for i in range(500):\n    open(f'f{i}', 'w').close()",
            replace(ROOMY, max_files=100),
            "No space left on device",
            id="files",
        ),
        pytest.param(
            "kept = [open('/dev/null') for _ in range(500)]",
            replace(ROOMY, open_files=64),
            "Too many open files",
            id="descriptors",
        ),
    ],
)
async def test_the_working_directory_and_descriptors_are_bounded(
    source: str, limits: SandboxLimits, error: str
) -> None:
    result = await run_python(source + "\nprint('escaped')", "", limits=limits)
    assert result.outcome == "error" and error in result.stderr, result
    assert "escaped" not in result.stdout


@needs_namespaces
async def test_the_working_directory_is_not_the_hosts(tmp_path: Path) -> None:
    """What the solution writes in its directory never reaches the host's temporary directory."""
    source = "open('left-behind', 'w').write('x')\nimport os\nprint(sorted(os.listdir('.')))"
    result = await run_python(source, "", limits=ROOMY)
    assert result.stdout == "['left-behind', 'solution.py']\n", result


def test_a_code_eval_that_cannot_isolate_stops_before_any_work(tmp_path: Path) -> None:
    """`glimprouter eval` of a code set says so in one line, before asking any model."""
    tests = json.dumps([{"input": "", "output": "1\n", "testtype": "stdin"}])
    row = {"question_id": "p1", "question_content": "Print 1.", "public_test_cases": tests,
           "contest_date": "2024-09-01T00:00:00"}  # fmt: skip
    (tmp_path / "lcb_v5.jsonl").write_text(json.dumps(row) + "\n")
    with fake_model_server() as server:
        argv = ["eval", "--dataset", "lcb_v5", "--data-dir", str(tmp_path),
                "--output", str(tmp_path / "run"),
                "--small-url", server.url, "--large-url", server.url]  # fmt: skip
        command = f"import sys\nfrom glimprouter.cli import main\nsys.exit(main({argv!r}))"
        ran = grader_without_namespaces(command, {"GLIMPROUTER_ALLOW_UNCONFINED_CODE": "0"})
        asked = [request for request in server.requests if request.get("messages")]
    assert ran.returncode == 2, ran.stderr
    line = ran.stderr.strip().splitlines()[-1]  # after the progress bar, one line
    assert line.startswith("glimprouter: error: the code sandbox cannot isolate")
    assert "--allow-unconfined-code" in line and "Traceback" not in ran.stderr
    assert asked == []
