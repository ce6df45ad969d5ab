"""serve-router --workers N: N processes serve one port under uvicorn's supervisor; /metrics,
answered by any of them, sums every worker's values (prometheus-client's multiprocess mode); a
worker killed with SIGKILL is replaced, its counts kept and its live gauges dropped; a threaded
chain whose worker is killed mid-chain is finished by another worker with its steps kept."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from pathlib import Path

import httpx
from prometheus_client.multiprocess import MultiProcessCollector

from glimprouter.cli import main
from glimprouter.prompts import STEP_SEPARATOR
from tests.fakes import chat, fake_model_server
from tests.processes import stop, wait_until
from tests.routers import FRESH_CONNECTION, metrics_env, scrape, start_router, total
from tests.threads import saved_steps


def live_workers(directory: Path) -> set[int]:
    """The pids of the live workers: each has a file of live gauges until it is marked dead."""
    return {int(path.stem.rsplit("_", 1)[1]) for path in directory.glob("gauge_livesum_*.db")}


def per_worker(directory: Path, kind: str, metric: str) -> dict[int, float]:
    """One metric's value in each worker's own file (a worker's share of the sum)."""
    values = {}
    for path in directory.glob(f"{kind}_*.db"):
        pid = int(path.stem.rsplit("_", 1)[1])
        for family in MultiProcessCollector.merge([str(path)], accumulate=True):
            if family.name == metric:
                values[pid] = sum(sample.value for sample in family.samples)
    return values


def test_every_worker_serves_and_metrics_sum_them_all(tmp_path):
    directory, env = metrics_env(tmp_path)
    (directory / "counter_1.db").write_bytes(b"stale")  # a previous run's file: wiped at start
    with fake_model_server() as server:
        router, base = start_router(server.url, None, 64, "--workers", "2", env=env)
        try:
            assert len(live_workers(directory)) == 2
            usages = []
            # Connections go to whichever worker accepts first: send until both have run chains.
            while len(per_worker(directory, "counter", "glimprouter_chains_finished")) < 2:
                assert len(usages) < 200, "every chain went to the same worker"
                reply = httpx.post(
                    f"{base}/chat/completions", json=chat(), headers=FRESH_CONNECTION, timeout=60
                )
                assert reply.status_code == 200, reply.text
                usages.append(reply.json()["usage"]["glimprouter"])
            scrapes = [scrape(base) for _ in range(6)]
        finally:
            assert stop(router) == 0
    assert not (directory / "counter_1.db").exists()
    large = sum(usage["large_steps"] for usage in usages)
    for samples in scrapes:  # the same sums, whichever worker answered
        assert total(samples, "glimprouter_chains_finished_total") == len(usages)
        assert total(samples, "glimprouter_http_requests_total", code="200") >= len(usages)
        assert total(samples, "glimprouter_steps_total", writer="large") == large
        assert total(samples, "glimprouter_steps_total", writer="small") == (
            sum(usage["steps"] for usage in usages) - large
        )
        for role in ("small", "large"):
            for kind in ("prompt", "completion"):
                assert total(samples, "glimprouter_model_tokens_total", role=role, kind=kind) == (
                    sum(usage[role][f"{kind}_tokens"] for usage in usages)
                )
        assert total(samples, "glimprouter_chains_running") == 0


def test_a_killed_worker_is_replaced_and_a_threaded_chain_it_ran_is_finished_by_another(
    tmp_path, postgres_uri
):
    directory, env = metrics_env(tmp_path)
    thread = "worker-killed"
    body = chat(thread_id=thread, max_tokens=160)
    with fake_model_server(delay_s=0.2) as server:
        router, base = start_router(server.url, postgres_uri, 160, "--workers", "2", env=env)
        try:
            workers = live_workers(directory)

            def send() -> None:
                with contextlib.suppress(httpx.HTTPError):  # its worker is killed mid-chain
                    httpx.post(f"{base}/chat/completions", json=body, timeout=600)

            threading.Thread(target=send, daemon=True).start()
            wait_until(lambda: len(saved_steps(postgres_uri, thread)) >= 2, 600, "two saved steps")
            running = per_worker(directory, "gauge_livesum", "glimprouter_chains_running")
            (busy,) = [pid for pid, chains in running.items() if chains == 1]
            assert total(scrape(base), "glimprouter_chains_running") == 1
            os.kill(busy, signal.SIGKILL)
            replaced = wait_until(
                lambda: len(live_workers(directory) - {busy}) == 2, 120, "a replacement worker"
            )
            assert replaced and busy not in live_workers(directory)
            assert live_workers(directory) & workers == workers - {busy}
            # The dead worker's running chain is no longer counted.
            assert total(scrape(base), "glimprouter_chains_running") == 0
            before = saved_steps(postgres_uri, thread)
            reply = httpx.post(f"{base}/chat/completions", json=body, timeout=600)
            assert reply.status_code == 200, reply.text
            finished = total(scrape(base), "glimprouter_chains_finished_total")
        finally:
            assert stop(router) == 0
    after = saved_steps(postgres_uri, thread)
    assert len(before) >= 2 and after[: len(before)] == before
    reasoning = reply.json()["choices"][0]["message"]["reasoning_content"]
    assert reasoning.startswith(STEP_SEPARATOR.join(step["text"] for step in before))
    assert finished == 1


def test_sigterm_stops_every_worker_and_removes_the_metrics_directory(tmp_path):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    with fake_model_server() as server:
        router, base = start_router(
            server.url, None, 64, "--workers", "2", env=env | {"TMPDIR": str(scratch)}
        )
        try:
            (directory,) = scratch.glob("glimprouter-metrics-*")
            workers = live_workers(directory)
            assert len(workers) == 2
            reply = httpx.post(f"{base}/chat/completions", json=chat(), timeout=60)
            assert reply.status_code == 200
            router.send_signal(signal.SIGTERM)  # the supervisor alone, as systemd or a shell does
            assert router.wait(timeout=60) == 0
        finally:
            stop(router)
    assert not list(scratch.glob("glimprouter-metrics-*"))
    for pid in workers:
        assert not Path(f"/proc/{pid}").exists(), f"worker {pid} outlived its supervisor"


def test_workers_must_be_positive(capsys):
    status = main(["serve-router", "--small-url", "http://127.0.0.1:9/v1", "--large-url",
                   "http://127.0.0.1:9/v1", "--workers", "0"])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert status == 2 and len(err.splitlines()) == 1 and "--workers 0" in err
