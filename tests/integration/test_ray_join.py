"""`eval --ray ADDRESS` joins a cluster that `ray start --head` runs (as on a machine of a real
cluster), with token authentication as `ray start` enables it: the problems run on that
cluster's workers, the eval leaves the cluster up when it ends; a driver without the token, or
an address nobody serves, is refused in one line saying what to set."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil
import pytest

from glimprouter.vllm_launcher.command import free_port
from tests.fakes import fake_model_server
from tests.processes import Lines, processes_marked, running, stop, wait_until
from tests.runs import records

RAY = Path(sys.executable).with_name("ray")
pytest.importorskip("ray")


def eval_command(url: str, data_file: Path, output: Path, address: str) -> list[str]:
    return [sys.executable, "-m", "glimprouter.cli", "eval", "--data-file", str(data_file),
            "--small-url", url, "--large-url", url, "--step-max-tokens", "16",
            "--token-budget", "48", "--answer-max-tokens", "16", "--output", str(output),
            "--ray", address, "--ray-workers", "1"]  # fmt: skip


def on_cluster(head: psutil.Process) -> bool:
    """Whether one of our eval workers runs among the `ray start` head's processes."""
    try:
        children = head.children(recursive=True)
    except psutil.NoSuchProcess:
        return False
    for child in children:
        try:
            if (child.cmdline() or [""])[0].startswith("ray::EvalWorker"):
                return True
        except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
            continue  # one of Ray's short-lived processes, gone meanwhile
    return False


def test_an_eval_joins_a_ray_start_cluster_and_leaves_it_running(tmp_path):
    data_file = tmp_path / "problems.jsonl"
    data_file.write_text('{"problem": "What is 2 + 2?", "answer": "4"}\n')
    port, marker = free_port(), f"join-{os.getpid()}"
    # A short root: Ray's socket paths must fit in 107 bytes, which a deep TMPDIR passes.
    with tempfile.TemporaryDirectory(prefix="ray-", dir="/tmp", ignore_cleanup_errors=True) as root:
        head_command = [str(RAY), "start", "--head", "--block", "--port", str(port),
                        "--num-cpus", "1", "--include-dashboard", "false",
                        "--disable-usage-stats", "--temp-dir", root]  # fmt: skip
        # Token authentication on, whatever this Ray version's default, with a token of ours.
        token = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
        env = {**os.environ, "GLIMPROUTER_RAY_TEST": marker, **token}
        with running(head_command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                     text=True, ignore_sigint=True) as head:  # fmt: skip
            Lines(head.stdout).wait_for(
                lambda line: line if "Ray runtime started" in line else None, 300, "ray start"
            )
            seen_on_cluster: list[bool] = []

            def note_where(index: int, request: dict) -> None:
                seen_on_cluster.append(on_cluster(psutil.Process(head.pid)))

            with fake_model_server(fault=note_where) as server:
                command = eval_command(server.url, data_file, tmp_path / "run", f"127.0.0.1:{port}")
                without = {key: value for key, value in env.items() if key not in token}
                no_token = subprocess.run(command, env=without | {"RAY_AUTH_MODE": "disabled"},
                                          capture_output=True, text=True, timeout=600)  # fmt: skip
                assert server.requests == []
                joined = subprocess.run(command, env=env, capture_output=True, text=True,
                                        timeout=600)  # fmt: skip
            assert_refused_naming_the_fix(no_token)
            assert joined.returncode == 0, joined.stderr
            (record,) = records(tmp_path / "run")
            assert record["correct"] and not record.get("error"), record
            # Every model request came from a worker of the `ray start` cluster.
            assert seen_on_cluster and all(seen_on_cluster), seen_on_cluster
            assert head.poll() is None, "the eval stopped the cluster it joined"
            stop(head)
        # Before its folder goes: `ray start --block` stops the cluster's processes on SIGTERM.
        wait_until(lambda: not processes_marked(marker), 120, "the ray start cluster to stop")


def test_an_address_no_cluster_serves_is_one_line_naming_ray(tmp_path):
    data_file = tmp_path / "problems.jsonl"
    data_file.write_text('{"problem": "What is 2 + 2?", "answer": "4"}\n')
    with fake_model_server() as server:
        command = eval_command(server.url, data_file, tmp_path / "run", f"127.0.0.1:{free_port()}")
        refused = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert_refused_naming_the_fix(refused)


def assert_refused_naming_the_fix(refused: subprocess.CompletedProcess) -> None:
    """Exit 2 and, last of all Ray logged, one line naming what to start or set."""
    assert refused.returncode == 2, refused.stderr
    last = refused.stderr.strip().splitlines()[-1]
    assert last.startswith("glimprouter: error: cannot join the Ray cluster at"), last
    assert "ray start --head" in last and "RAY_AUTH_MODE=token" in last, last
