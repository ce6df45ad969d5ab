"""Planning `glimprouter serve` without starting it: model folders of a given size, the server
specs a command line gives on a chosen engine, and what each server would be started with."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from glimprouter.cli import build_parser
from glimprouter.vllm_launcher import command
from glimprouter.vllm_launcher import pair as serving_pair
from glimprouter.vllm_launcher.cli import specs_from_args
from glimprouter.vllm_launcher.command import ServerSpec, build_command, build_env
from glimprouter.vllm_launcher.placement import (
    Engine,
)

GIB = 2**30


def model_folder(root: Path, name: str, weights_gib: float, max_positions: int = 32768) -> Path:
    """A model folder with sparse weights of the given size, a config and a ChatML template."""
    folder = root / name
    folder.mkdir()
    with (folder / "model.safetensors").open("wb") as weights:
        weights.truncate(int(weights_gib * GIB))
    (folder / "config.json").write_text(json.dumps({"max_position_embeddings": max_positions}))
    (folder / "chat_template.jinja").write_text(
        (command.VERBATIM_TEMPLATE).read_text()  # continues verbatim: kept as stock
    )
    return folder


@pytest.fixture
def pair(tmp_path) -> tuple[Path, Path]:
    """An 8 GiB small model and a 32 GiB large one (a 4B and a 16B model in bf16)."""
    return model_folder(tmp_path, "small", 8), model_folder(tmp_path, "large", 32)


def serve_specs(monkeypatch, engine: Engine, argv: list[str]) -> list[ServerSpec]:
    for module in (command, serving_pair):  # is_cpu_only and place_pair ask the engine
        monkeypatch.setattr(module, "installed_engine", lambda: engine)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    for name in ("TOKEN_BUDGET", "ANSWER_MAX_TOKENS"):
        monkeypatch.delenv(f"GLIMPROUTER_{name}", raising=False)
    return specs_from_args(build_parser().parse_args(["serve", *argv]))


def plan(specs: list[ServerSpec], cpu_only: bool) -> list[tuple[dict[str, str], list[str]]]:
    """What each server gets: the variables GlimpRouter adds, and the command line."""
    return [(build_env(spec, cpu_only, base={}), build_command(spec, cpu_only)) for spec in specs]


def flag(cmd: list[str], flag: str) -> str | None:
    return cmd[cmd.index(flag) + 1] if flag in cmd else None
