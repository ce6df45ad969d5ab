"""`glimprouter serve --replicas N`: the planned servers of each role, their ports, cores or
devices, vLLM's parallelism passed through, and the URL list printed to paste."""

from __future__ import annotations

import pytest

from glimprouter import RouterContext
from glimprouter.errors import ConfigError
from glimprouter.vllm_launcher import pair as serving_pair
from glimprouter.vllm_launcher.cli import print_endpoints
from glimprouter.vllm_launcher.launcher import VLLMServer
from glimprouter.vllm_launcher.placement import Engine, split_cores, split_gpus
from tests.serving import flag, plan, serve_specs


def test_cores_are_split_into_one_contiguous_range_per_server():
    assert split_cores(2, 2) == ["0", "1"]
    assert split_cores(4, 3) == ["0-1", "2", "3"]
    assert split_cores(8, 4) == ["0-1", "2-3", "4-5", "6-7"]
    with pytest.raises(ConfigError, match="3 vLLM servers on 2 cores"):
        split_cores(2, 3)


def test_gpus_are_split_into_disjoint_groups_per_replica():
    assert split_gpus(["0", "1", "2", "3"], 2, 2, "the GPUs") == [("0", "1"), ("2", "3")]
    with pytest.raises(ConfigError, match="need 6 GPUs, more than the 4 left of --large-gpus"):
        split_gpus(["0", "1", "2", "3"], 3, 2, "--large-gpus")


def test_replicas_on_cpu_get_their_own_ports_and_cores(monkeypatch, pair):
    small, large = pair
    monkeypatch.setattr(serving_pair.os, "cpu_count", lambda: 4)
    argv = ["--small", str(small), "--large", str(large), "--small-replicas", "2"]
    specs = serve_specs(monkeypatch, Engine("cpu"), argv)
    assert [(s.served_names[0], s.port, s.cpu_threads_bind) for s in specs] == [
        ("small", 8001, "0-1"),
        ("small", 8011, "2"),
        ("large", 8002, "3"),
    ]
    for env, _ in plan(specs, cpu_only=True):
        assert env["VLLM_CPU_OMP_THREADS_BIND"] in ("0-1", "2", "3")
    monkeypatch.setattr(serving_pair.os, "cpu_count", lambda: 2)
    with pytest.raises(ConfigError, match="lower --replicas"):
        serve_specs(monkeypatch, Engine("cpu"), [*argv, "--large-replicas", "2"])


def test_one_model_as_both_roles_is_replicated_whole(monkeypatch, pair):
    monkeypatch.setattr(serving_pair.os, "cpu_count", lambda: 2)
    specs = serve_specs(monkeypatch, Engine("cpu"), ["--model", str(pair[0]), "--replicas", "2"])
    assert [(s.served_names, s.port, s.cpu_threads_bind) for s in specs] == [
        (["small", "large"], 8001, "0"),
        (["small", "large"], 8011, "1"),
    ]


def test_replicas_on_gpus_get_their_own_devices_with_parallelism_passed_through(monkeypatch, pair):
    small, large = pair
    engine = Engine("cuda", (80.0,) * 8)
    argv = ["--small", str(small), "--large", str(large), "--large-replicas", "3"]
    argv += ["--tensor-parallel-size", "2"]
    specs = serve_specs(monkeypatch, engine, argv)
    assert [(s.served_names[0], s.devices) for s in specs] == [
        ("small", ("0", "1")),
        ("large", ("2", "3")),
        ("large", ("4", "5")),
        ("large", ("6", "7")),
    ]
    for env, cmd in plan(specs, cpu_only=False):
        assert cmd.count("--tensor-parallel-size") == 1 and flag(cmd, "--tensor-parallel-size")
        assert flag(cmd, "--gpu-memory-utilization") is None  # each alone on its devices
        assert len(env["CUDA_VISIBLE_DEVICES"].split(",")) == 2
    # The role's own vLLM arguments come last: they win over what is passed to every server.
    specs = serve_specs(monkeypatch, engine, [*argv, "--large-vllm-args=--seed 7"])
    assert specs[1].extra_args == ["--tensor-parallel-size", "2", "--seed", "7"]
    argv = ["--model", str(small), "--replicas", "3"]
    argv += ["--tensor-parallel-size", "2", "--data-parallel-size", "2"]  # 4 GPUs each
    with pytest.raises(ConfigError, match="need 12 GPUs, more than the 8 left of the visible"):
        serve_specs(monkeypatch, engine, argv)
    specs = serve_specs(monkeypatch, engine, ["--small", str(small), "--large", str(large)])
    assert all(s.extra_args == [] for s in specs)  # nothing passed through unless asked


def test_parallel_sizes_must_be_positive(monkeypatch, pair):
    with pytest.raises(ConfigError, match="must be at least 1"):
        serve_specs(monkeypatch, Engine("cpu"), ["--model", str(pair[0]), "--replicas", "0"])
    with pytest.raises(ConfigError, match="--tensor-parallel-size"):
        argv = ["--model", str(pair[0]), "--tensor-parallel-size", "0"]
        serve_specs(monkeypatch, Engine("cpu"), argv)


def test_the_printed_urls_paste_into_a_context(monkeypatch, pair, capsys, tmp_path):
    monkeypatch.setattr(serving_pair.os, "cpu_count", lambda: 2)
    specs = serve_specs(monkeypatch, Engine("cpu"), ["--model", str(pair[0]), "--replicas", "2"])
    print_endpoints([VLLMServer(spec, log_dir=tmp_path) for spec in specs])
    printed = dict(
        line.split()[1].split("=", 1)
        for line in capsys.readouterr().out.splitlines()
        if line.strip().startswith("export") and "BASE_URL" in line
    )
    context = RouterContext(
        small_base_url=printed["GLIMPROUTER_SMALL_BASE_URL"],
        large_base_url=printed["GLIMPROUTER_LARGE_BASE_URL"],
    )
    expected = ("http://127.0.0.1:8001/v1", "http://127.0.0.1:8011/v1")
    assert context.replica_urls("small") == context.replica_urls("large") == expected
