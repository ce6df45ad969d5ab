"""Evals end to end through `glimprouter eval` against the real vLLM server of the test session."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.server

DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"
TINY_BUDGET = ["--token-budget", "48", "--step-max-tokens", "24", "--answer-max-tokens", "40"]


def glimprouter(*args: str, **popen) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "glimprouter.cli", *args],
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
        **popen,
    )


def endpoints(url: str) -> list[str]:
    return ["--small-url", url, "--large-url", url]


def records(directory: Path) -> list[dict]:
    return [json.loads(line) for line in (directory / "results.jsonl").read_text().splitlines()]


def test_eval_math_and_code_with_two_methods_then_report(vllm_base_url, tmp_path):
    runs = {
        ("math500", "glimprouter"): ["--dataset", "math500", "--levels", "1", "--limit", "3"],
        ("math500", "small-only"): ["--dataset", "math500", "--levels", "1", "--limit", "3"],
        ("lcb_v5", "glimprouter"): ["--dataset", "lcb_v5", "--limit", "2"],
        ("lcb_v5", "small-only"): ["--dataset", "lcb_v5", "--limit", "2"],
    }
    for (dataset, method), selection in runs.items():
        done = glimprouter(
            "eval",
            *selection,
            "--data-dir",
            str(DATA_DIR),
            "--method",
            method,
            "--threshold",
            "0.8",
            "--concurrency",
            "2",
            "--seed",
            "3",
            "--output",
            str(tmp_path / f"{dataset}-{method}"),
            *endpoints(vllm_base_url),
            *TINY_BUDGET,
        )
        assert done.returncode == 0, done.stderr
        results = records(tmp_path / f"{dataset}-{method}")
        assert len(results) == len({r["problem_id"] for r in results}) == int(selection[-1])
        for result in results:
            assert isinstance(result["correct"], bool) and result["latency_s"] > 0
            assert result["steps"] == len(result["trace"]) >= 1
            assert result["small_completion_tokens"] + result["large_completion_tokens"] > 0
            assert sum(s["completion_tokens"] for s in result["trace"]) <= 48
            if method == "small-only":
                assert result["large_steps"] == 0 and result["small_requests"] == result["steps"]
            if dataset == "lcb_v5":
                assert result["gold_answer"] == "" and result["grade_detail"]
    report = glimprouter("report", str(tmp_path))
    assert report.returncode == 0, report.stderr
    for heading in ("### math500", "### lcb_v5", "| glimprouter t=0.8 | 3 |", "| small-only | 2 |"):
        assert heading in report.stdout
    assert (tmp_path / "pareto.png").stat().st_size > 10_000
    calibrated = glimprouter(
        "calibrate", "--from", str(tmp_path / "math500-glimprouter"), "--target-large-share", "0.5"
    )
    assert calibrated.returncode == 0 and "threshold" in calibrated.stdout, calibrated.stderr


def test_rerun_after_kill_9_loses_and_duplicates_nothing(vllm_base_url, tmp_path):
    output = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "glimprouter.cli",
        "eval",
        "--dataset",
        "math500",
        "--data-dir",
        str(DATA_DIR),
        "--levels",
        "1",
        "--limit",
        "6",
        "--concurrency",
        "2",
        "--method",
        "glimprouter",
        "--output",
        str(output),
        *endpoints(vllm_base_url),
        *TINY_BUDGET,
    ]
    victim = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    results = output / "results.jsonl"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and victim.poll() is None:
        if results.exists() and results.read_text().count("\n") >= 2:
            break
        time.sleep(0.2)
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait()
    before = records(output)
    assert 2 <= len(before) < 6, "the kill should land mid-run"

    again = subprocess.run(command, capture_output=True, text=True, timeout=1200, check=False)
    assert again.returncode == 0, again.stderr
    after = records(output)
    assert after[: len(before)] == before  # nothing recorded was lost or rewritten
    assert sorted(r["problem_id"] for r in after) == sorted({r["problem_id"] for r in after})
    assert len(after) == 6
