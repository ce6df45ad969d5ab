"""Evals across a Ray cluster (`eval --ray`): a local Ray cluster of this machine runs the same
problems as the local runner, with the same records; a worker killed with a problem in flight
loses none, and a problem that keeps killing its worker becomes a failed record."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import urlparse

import psutil
import pytest

from glimprouter.cli import main
from glimprouter.evals.datasets import load_problems
from glimprouter.evals.ray_cluster import TASK_RETRIES, RayCluster
from glimprouter.evals.runner import run_eval
from glimprouter.stopping import run
from tests.fakes import context_at, fake_model_server, problem
from tests.processes import processes_marked, running, wait_until
from tests.runs import by_key, records

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def cluster():
    """One local Ray cluster for the module (about 10 s to start), of two one-CPU workers."""
    on_sigterm = signal.getsignal(signal.SIGTERM)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    signal.signal(signal.SIGTERM, on_sigterm)  # the session's own, not Ray's
    yield RayCluster(workers=2)
    ray.shutdown()


@pytest.fixture
def data_file(tmp_path: Path) -> Path:
    path = tmp_path / "problems.jsonl"
    rows = [{"problem": f"What is {n} + {n}?", "answer": str(2 * n)} for n in range(6)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def eval_args(url: str, data_file: Path, output: Path, *extra: str) -> list[str]:
    return ["eval", "--data-file", str(data_file), "--repeats", "2", "--concurrency", "2",
            "--small-url", url, "--large-url", url, "--step-max-tokens", "16",
            "--token-budget", "48", "--answer-max-tokens", "16", "--seed", "1",
            "--output", str(output), *extra]  # fmt: skip


def test_ray_gives_the_records_the_local_runner_gives(cluster, data_file, tmp_path):
    with fake_model_server() as server:
        assert main(eval_args(server.url, data_file, tmp_path / "local")) == 0
        assert main(eval_args(server.url, data_file, tmp_path / "ray", "--ray", "auto")) == 0
    local, on_ray = by_key(records(tmp_path / "local")), by_key(records(tmp_path / "ray"))
    assert len(local) == 12 and on_ray == local
    # A rerun on Ray resumes: nothing left to do.
    with fake_model_server() as server:
        assert main(eval_args(server.url, data_file, tmp_path / "ray", "--ray", "auto")) == 0
        assert server.requests == []
    assert len(records(tmp_path / "ray")) == 12


def worker_pids() -> set[int]:
    """The processes of our Ray actors (Ray titles each `ray::EvalWorker...`)."""
    pids = set()
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info["cmdline"] or []
        if cmdline and cmdline[0].startswith("ray::EvalWorker"):
            pids.add(process.pid)
    return pids


def asking(pid: int, port: int) -> bool:
    """Whether process `pid` has a connection open to the model server on `port`."""
    with contextlib.suppress(psutil.NoSuchProcess):
        for connection in psutil.Process(pid).net_connections("tcp"):
            if connection.raddr and connection.raddr.port == port:
                return connection.status == psutil.CONN_ESTABLISHED
    return False


def test_a_worker_killed_with_a_problem_in_flight_loses_and_repeats_no_record(
    cluster, data_file, tmp_path
):
    """Every model request waits until a worker, seen with a request open to the model server,
    is killed: the killed call had a problem in flight by construction, and Ray's retry of it
    gives its record once."""
    problems = load_problems(data_file=data_file)
    killed: list[int] = []
    victim_killed = threading.Event()

    def kill_a_worker_mid_request(port: int) -> None:
        try:
            victim = wait_until(
                lambda: next((pid for pid in sorted(worker_pids()) if asking(pid, port)), None),
                120,
                "a Ray worker with a model request in flight",
            )
            os.kill(victim, signal.SIGKILL)
            killed.append(victim)
        finally:
            victim_killed.set()  # the held requests go on either way: the eval must end

    with fake_model_server(fault=lambda *_: victim_killed.wait() and None) as server:
        killer = threading.Thread(
            target=kill_a_worker_mid_request, args=(urlparse(server.url).port,)
        )
        killer.start()
        tally = run(
            run_eval(
                problems,
                context_at(server.url),
                tmp_path / "run",
                dataset="file",
                repeats=2,
                concurrency=2,
                cluster=cluster,
            )
        )
        killer.join()
    rows = records(tmp_path / "run")
    assert killed and killed[0] not in worker_pids()
    assert tally.failed == 0 and all(not row.get("error") for row in rows)
    assert set(by_key(rows)) == {(p.id, repeat) for p in problems for repeat in (0, 1)}


def test_a_problem_that_kills_its_worker_every_time_is_recorded_as_failed(cluster, tmp_path):
    """Each time its model request arrives, the worker that sent it (the only one) is killed:
    after the first try and TASK_RETRIES more, its record is a failure; the next problem runs
    on the restarted worker."""
    doomed, fine = problem("doomed"), problem("fine")
    tries: list[int] = []

    def kill_the_asker(index: int, request: dict) -> str | None:
        if doomed.question not in request["messages"][0]["content"]:
            return None
        tries.append(index)
        for pid in worker_pids():
            os.kill(pid, signal.SIGKILL)
        return "500"

    with fake_model_server(fault=kill_the_asker) as server:
        tally = run(
            run_eval(
                [doomed, fine],
                context_at(server.url),
                tmp_path / "run",
                dataset="file",
                concurrency=1,
                cluster=RayCluster(workers=1),
            )
        )
    rows = {row["problem_id"]: row for row in records(tmp_path / "run")}
    assert len(tries) == TASK_RETRIES + 1
    assert f"its Ray worker died {TASK_RETRIES + 1} times" in rows[doomed.id]["error"]
    assert not rows[fine.id].get("error") and tally.failed == 1


def test_ray_flags_are_checked(capsys, monkeypatch, data_file, tmp_path):
    assert main(eval_args("http://127.0.0.1:9/v1", data_file, tmp_path, "--ray-workers", "2")) == 2
    assert "--ray-workers needs --ray" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    with fake_model_server() as server:
        assert main(eval_args(server.url, data_file, tmp_path / "r", "--ray")) == 2
    assert 'pip install "glimprouter[ray]"' in capsys.readouterr().err


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGKILL])
def test_a_stopped_ray_eval_leaves_no_cluster_and_the_rerun_completes(
    cluster, data_file, tmp_path, stop_signal
):
    """SIGTERM unwinds (exit 143, the cluster stopped); after SIGKILL Ray itself stops the
    cluster of a driver that died (its raylet watches the driver)."""
    marker = f"{os.getpid()}-{tmp_path.name}"
    output = tmp_path / "run"
    with fake_model_server(delay_s=0.2) as server:
        args = eval_args(server.url, data_file, output, "--ray", "--ray-workers", "2")
        with running(
            [sys.executable, "-m", "glimprouter.cli", *args],
            env={**os.environ, "GLIMPROUTER_RAY_TEST": marker},
            ignore_sigint=True,  # as when CI starts it in the background
            stdin=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ) as process:
            first_record = lambda: (output / "results.jsonl").exists() and records(output)  # noqa: E731
            wait_until(first_record, 300, "the eval's first record")
            assert len(processes_marked(marker)) > 1, "the eval runs its own Ray cluster"
            process.send_signal(stop_signal)
            assert process.wait(timeout=120) == (143 if stop_signal == signal.SIGTERM else -9)
        if stop_signal == signal.SIGTERM:  # unwound: its cluster stopped before it exited
            assert processes_marked(marker) == [], "the eval's Ray cluster outlived it"
        wait_until(lambda: not processes_marked(marker), 120, "the killed eval's cluster to end")
        assert main(eval_args(server.url, data_file, output, "--ray", "auto")) == 0
    assert len(by_key(records(output))) == 12


def test_a_sweep_runs_every_threshold_on_one_cluster(cluster, data_file, tmp_path):
    with fake_model_server() as server:
        args = eval_args(server.url, data_file, tmp_path, "--ray", "auto")
        args[0] = "sweep"
        args[args.index("--output") + 1] = str(tmp_path / "sweep")
        assert main([*args, "--thresholds", "0.5,1.5"]) == 0
    runs = sorted(path.name for path in (tmp_path / "sweep").iterdir())
    assert runs == ["glimprouter-t0.5", "glimprouter-t1.5"]
    for run_dir in runs:
        assert len(by_key(records(tmp_path / "sweep" / run_dir))) == 12
    assert ray.is_initialized(), "a cluster the sweep joined is left running"
