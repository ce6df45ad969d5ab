"""What a model's own files say: its chat template, its longest context, its weights' size.

A model is a local folder or a Hugging Face hub id; for a hub id the small JSON files are read
through huggingface_hub (its cache first), and an unreachable hub is an unknown, never an error.
"""

from __future__ import annotations

import json
from pathlib import Path

from glimprouter.vllm_launcher.local_models import read_chat_template


def _hub_file(repo: str, name: str) -> Path | None:
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(repo, name))
    except Exception:  # offline, gated, absent file, no huggingface_hub: all mean "unknown"
        return None


def chat_template(model: str | Path) -> str | None:
    """The model's stock chat template, or None when it cannot be read."""
    folder = Path(model).expanduser()
    if folder.is_dir():
        return read_chat_template(folder) or None
    for name in ("chat_template.jinja", "tokenizer_config.json"):
        if (path := _hub_file(str(model), name)) is not None:
            return read_chat_template(path.parent) or None
    return None


def _config(model: str | Path) -> dict:
    folder = Path(model).expanduser()
    path = folder / "config.json" if folder.is_dir() else _hub_file(str(model), "config.json")
    try:
        return json.loads(path.read_text()) if path is not None else {}
    except (OSError, ValueError):
        return {}


def max_context_length(model: str | Path) -> int | None:
    """The longest context the model was built for (config.json), or None if unknown."""
    config = _config(model)
    config = config.get("text_config", config)  # multimodal configs nest the language model
    value = config.get("max_position_embeddings")
    return int(value) if isinstance(value, int) and value > 0 else None


def weights_gib(model: str | Path) -> float | None:
    """Size of the model's weight files in GiB (local folders; hub ids via the hub's listing)."""
    folder = Path(model).expanduser()
    if folder.is_dir():
        files = [*folder.glob("*.safetensors")] or [*folder.glob("*.bin")]
        return sum(file.stat().st_size for file in files) / 2**30 if files else None
    try:
        from huggingface_hub import HfApi

        info = HfApi().model_info(str(model), files_metadata=True)
    except Exception:  # offline or unknown: the memory split falls back to equal shares
        return None
    sizes = [s.size or 0 for s in info.siblings or [] if s.rfilename.endswith(".safetensors")]
    return sum(sizes) / 2**30 if sizes else None
