"""Evals end to end through `glimprouter eval` against the real vLLM server of the test session."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from urllib.parse import urlparse

import pytest

from glimprouter.evals.datasets import load_problems, split_problems
from tests.paths import SHARED_DATA
from tests.processes import running, signal_group, wait_until
from tests.proxy import KillableProxy
from tests.runs import records

pytestmark = pytest.mark.vllm

DATA_DIR = SHARED_DATA
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


def test_test_split_matched_random_and_a_paired_report(vllm_base_url, tmp_path):
    glimp, rand = tmp_path / "glimprouter", tmp_path / "random"
    common = ["--dataset", "math500", "--data-dir", str(DATA_DIR), "--levels", "1",
              "--split", "test", "--limit", "3", "--seed", "3", "--concurrency", "2",
              *endpoints(vllm_base_url), *TINY_BUDGET]  # fmt: skip
    done = glimprouter("eval", *common, "--method", "glimprouter", "--threshold", "0.8",
                       "--output", str(glimp))  # fmt: skip
    assert done.returncode == 0, done.stderr
    done = glimprouter("eval", *common, "--method", "random", "--large-rate", f"match:{glimp}",
                       "--output", str(rand))  # fmt: skip
    assert done.returncode == 0, done.stderr
    routed = records(glimp)
    share = sum(r["large_steps"] for r in routed) / sum(r["steps"] for r in routed)
    config = json.loads((rand / "config.json").read_text())
    assert config["large_rate"] == pytest.approx(share) and config["split"] == "test"
    test_ids = {p.id for p in split_problems(load_problems("math500", data_dir=DATA_DIR,
                                                           levels={1}), "test")}  # fmt: skip
    assert {r["problem_id"] for r in routed} <= test_ids

    report = glimprouter("report", str(glimp), str(rand), "--against", "random")
    assert report.returncode == 0, report.stderr
    assert "### math500 (test split)" in report.stdout
    assert "### math500: against random p=" in report.stdout
    assert "against random at its large share" in report.stdout
    assert "| glimprouter t=0.8 | 3 | " in report.stdout


def test_rerun_after_kill_9_loses_and_duplicates_nothing(vllm_base_url, tmp_path):
    output = tmp_path / "run"
    first_two = [p.question for p in load_problems("math500", data_dir=DATA_DIR, levels={1})[:2]]
    proxy = KillableProxy(urlparse(vllm_base_url).port)
    # Only the first two problems may finish before the kill, however fast the model is: the
    # others wait in the proxy (two at a time, taking the eval's two slots).
    proxy.hold(lambda number, body: not any(q in body["messages"][0]["content"] for q in first_two))
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
        *endpoints(proxy.url),
        *TINY_BUDGET,
    ]
    results = output / "results.jsonl"
    try:
        with running(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as victim:
            wait_until(
                lambda: results.exists() and results.read_text().count("\n") >= 2,
                600,
                "two recorded problems",
            )
            wait_until(lambda: proxy.held() == 2, 600, "the next two problems waiting")
            signal_group(victim.pid, signal.SIGKILL)
            victim.wait()
        before = records(output)
        assert len(before) == 2, "the kill should land mid-run"

        proxy.release()
        again = subprocess.run(command, capture_output=True, text=True, timeout=1200, check=False)
    finally:
        proxy.close()
    assert again.returncode == 0, again.stderr
    after = records(output)
    assert after[: len(before)] == before  # nothing recorded was lost or rewritten
    assert sorted(r["problem_id"] for r in after) == sorted({r["problem_id"] for r in after})
    assert len(after) == 6


def test_regrade_of_a_real_run_changes_only_grades_and_asks_no_model(vllm_base_url, tmp_path):
    proxy = KillableProxy(urlparse(vllm_base_url).port)
    try:
        done = glimprouter("eval", "--dataset", "math500", "--levels", "1", "--limit", "2",
                           "--data-dir", str(DATA_DIR), "--method", "small-only", "--seed", "3",
                           "--output", str(tmp_path), *endpoints(proxy.url),
                           *TINY_BUDGET)  # fmt: skip
        assert done.returncode == 0, done.stderr
        asked = len(proxy.chat_requests())
        before = records(tmp_path)
        # A grader bug had it the other way round: regrade puts the first grade right.
        flipped = [{**before[0], "correct": not before[0]["correct"]}, *before[1:]]
        (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in flipped))
        regraded = glimprouter("regrade", str(tmp_path), "--grade-timeout", "30")
        assert regraded.returncode == 0, regraded.stderr
        assert "2 records regraded, 1 grades changed" in regraded.stdout
        assert len(proxy.chat_requests()) == asked  # no model request
    finally:
        proxy.close()
    grade = ("correct", "extracted_answer", "grade_detail", "grading")
    for old, new in zip(before, records(tmp_path), strict=True):
        assert old == new or {k: v for k, v in old.items() if k not in grade} == {
            k: v for k, v in new.items() if k not in grade
        }
        assert old["correct"] == new["correct"]
