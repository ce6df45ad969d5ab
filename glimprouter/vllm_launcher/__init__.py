"""Launching vLLM: the local default models and launching vLLM's OpenAI-compatible servers."""

from glimprouter.vllm_launcher.command import (
    VERBATIM_TEMPLATE,
    ServerSpec,
    build_command,
    build_env,
    free_port,
    is_cpu_only,
    resolve_chat_template,
)
from glimprouter.vllm_launcher.launcher import VLLMServer
from glimprouter.vllm_launcher.local_models import (
    LOCAL_MODELS,
    LOCAL_PAIR,
    LocalModel,
    cache_dir,
    get_local_model,
    prepare,
)
from glimprouter.vllm_launcher.pair import local_pair_specs, place_pair, serve

__all__ = [
    "LOCAL_MODELS",
    "LOCAL_PAIR",
    "VERBATIM_TEMPLATE",
    "LocalModel",
    "ServerSpec",
    "VLLMServer",
    "build_command",
    "build_env",
    "cache_dir",
    "free_port",
    "get_local_model",
    "is_cpu_only",
    "local_pair_specs",
    "place_pair",
    "prepare",
    "resolve_chat_template",
    "serve",
]
