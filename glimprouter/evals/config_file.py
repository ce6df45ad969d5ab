"""`glimprouter eval --config FILE`: a run described in a JSON or TOML file.

Its keys are our flags or settings by name (`threshold`, `--threshold`, `small_base_url`,
`small-url`) or the reference code's config.json keys (arXiv 2601.05110, Zengwh02/GlimpRouter),
each mapped onto the flag it became. The file's values are put on the command line right after
the command, before the user's own flags, so that a flag given on the command line wins (the
last occurrence of a flag is the one argparse keeps).
"""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from glimprouter.errors import ConfigError

CONFIG_FLAG = "--config"

# The reference code's keys: (our flag, what it became).
REFERENCE_KEYS: dict[str, tuple[str, str]] = {
    "dataset_name": ("--dataset", "the benchmark, one of our --dataset names"),
    "repeat_num": ("--repeats", "runs per problem"),
    "score_method": ("--method", "the routing strategy (glimprouter, step-entropy, ...)"),
    "token_budget": ("--token-budget", "most reasoning tokens over all steps"),
    "output_dir": ("--output", "where the run's records go"),
    "score_threshold": ("--threshold", "the strategy's cut"),
    "small_model_size": ("--small-model", "the small model's served name on its vLLM server"),
    "large_model_size": ("--large-model", "the large model's served name on its vLLM server"),
}


def expand_config(command: argparse.ArgumentParser, argv: Sequence[str]) -> list[str]:
    """`argv` (beginning with the command's name) with the flags of its --config file, if any,
    put right after the command's name."""
    argv = list(argv)
    if CONFIG_FLAG not in argv and not any(a.startswith(CONFIG_FLAG + "=") for a in argv):
        return argv
    path = _config_path(argv)
    return [argv[0], *config_flags(command, read_config(path)), *argv[1:]]


def _config_path(argv: list[str]) -> Path:
    for index, arg in enumerate(argv):
        if arg.startswith(CONFIG_FLAG + "="):
            return Path(arg.split("=", 1)[1])
        if arg == CONFIG_FLAG:
            if index + 1 == len(argv):
                raise ConfigError(f"{CONFIG_FLAG} needs a file: {CONFIG_FLAG} run.toml")
            return Path(argv[index + 1])
    raise AssertionError("expand_config checked --config is there")


def read_config(path: Path) -> dict[str, Any]:
    """The keys of a JSON or TOML (by its suffix .toml) config file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"cannot read {CONFIG_FLAG} {path}: {error.strerror}") from None
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as error:
        raise ConfigError(f"{CONFIG_FLAG} {path} is not valid JSON or TOML: {error}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{CONFIG_FLAG} {path} must hold one object of key: value pairs")
    return data


def config_flags(command: argparse.ArgumentParser, config: dict[str, Any]) -> list[str]:
    """The command-line flags of `config`'s keys, checked against `command`'s flags."""
    by_name = _flags_by_name(command)
    unknown = sorted(key for key in config if _flag_of(key, by_name) is None)
    if unknown:
        valid = sorted({*(f.lstrip("-") for f in by_name.values()), *REFERENCE_KEYS})
        raise ConfigError(f"unknown {CONFIG_FLAG} key(s) {unknown}; valid keys: {valid}")
    flags: list[str] = []
    for key, value in config.items():
        flag = _flag_of(key, by_name)
        if key in REFERENCE_KEYS:
            note = REFERENCE_KEYS[key][1]
            print(f"glimprouter: note: {key} became {flag}: {note}", file=sys.stderr)
        action = command._option_string_actions[flag]
        if action.nargs == 0:  # a switch: true gives it, false leaves it off
            if value is True:
                flags.append(flag)
            elif value is not False:
                raise ConfigError(f"{CONFIG_FLAG} key {key!r} is a switch: true or false")
        elif isinstance(value, list):
            flags += [flag, *map(_shown, value)]
        else:
            flags += [flag, _shown(value)]
    return flags


def _flags_by_name(command: argparse.ArgumentParser) -> dict[str, str]:
    """Each long flag under its own name (`small-url`) and its destination (`small_base_url`)."""
    by_name: dict[str, str] = {}
    for action in command._actions:
        longs = [s for s in action.option_strings if s.startswith("--")]
        if not longs or longs[0] in ("--help", CONFIG_FLAG):
            continue
        by_name[longs[0].lstrip("-")] = longs[0]
        by_name[action.dest] = longs[0]
    return by_name


def _flag_of(key: str, by_name: dict[str, str]) -> str | None:
    if key in REFERENCE_KEYS:
        return REFERENCE_KEYS[key][0]
    return by_name.get(key.lstrip("-"))


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)
