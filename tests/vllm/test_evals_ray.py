"""Evals on a Ray cluster against the real vLLM server of the test session."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.paths import SHARED_DATA
from tests.processes import processes_marked
from tests.runs import by_key, records

pytestmark = pytest.mark.vllm
pytest.importorskip("ray")


DATA_DIR = SHARED_DATA


def test_math500_on_a_ray_cluster_matches_the_local_run(vllm_base_url, tmp_path):
    """The same eval against the session's vLLM, locally and on a Ray cluster the command starts
    (and stops): the same (problem, repeat) records, graded the same where the answers agree."""
    selection = ["--dataset", "math500", "--levels", "1", "--limit", "2", "--repeats", "2",
                 "--data-dir", str(DATA_DIR), "--small-url", vllm_base_url, "--large-url",
                 vllm_base_url, "--token-budget", "48", "--step-max-tokens", "24",
                 "--answer-max-tokens", "40", "--seed", "3", "--concurrency", "2"]  # fmt: skip
    marker = f"{os.getpid()}-{tmp_path.name}"
    outputs = {"local": [], "ray": ["--ray", "--ray-workers", "2"]}
    for name, flags in outputs.items():
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "glimprouter.cli",
                "eval",
                *selection,
                *flags,
                "--output",
                str(tmp_path / name),
            ],  # fmt: skip
            capture_output=True,
            text=True,
            timeout=1200,
            env={**os.environ, "GLIMPROUTER_RAY_TEST": marker},
            check=False,
        )
        assert done.returncode == 0, done.stderr
    assert processes_marked(marker) == [], "the local Ray cluster outlived its eval"
    local, on_ray = by_key(records(tmp_path / "local")), by_key(records(tmp_path / "ray"))
    assert set(on_ray) == set(local) and len(local) == 4
    for key, row in on_ray.items():
        assert isinstance(row["correct"], bool) and row["steps"] >= 1
        if row["answer"] == local[key]["answer"]:
            assert (row["correct"], row["extracted_answer"]) == (
                local[key]["correct"],
                local[key]["extracted_answer"],
            )
