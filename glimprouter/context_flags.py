"""The command line's routing and endpoint flags, shared by every command that runs the graph:
each maps onto one RouterContext field, and unset ones fall back to GLIMPROUTER_* variables."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from glimprouter.graph.context import MODEL_ROLES, RouterContext, read_key_file

# Flags that map one-to-one onto RouterContext fields (flag -> field, type, help).
CONTEXT_FLAGS: list[tuple[str, str, type, str]] = [
    ("--small-url", "small_base_url", str, "small model's base URL, e.g. http://127.0.0.1:8001/v1"),
    ("--small-model", "small_model", str, "small model's served name"),
    (
        "--small-api-key",
        "small_api_key",
        str,
        "small model server's API key (shows in ps: prefer --small-api-key-file or "
        "GLIMPROUTER_SMALL_API_KEY)",
    ),
    ("--large-url", "large_base_url", str, "large model's base URL, e.g. http://127.0.0.1:8002/v1"),
    ("--large-model", "large_model", str, "large model's served name"),
    (
        "--large-api-key",
        "large_api_key",
        str,
        "large model server's API key (shows in ps: prefer --large-api-key-file or "
        "GLIMPROUTER_LARGE_API_KEY)",
    ),
    ("--method", "method", str, "routing strategy (default glimprouter; see the README)"),
    ("--threshold", "threshold", float, "glimpse entropy at or above which the large model writes"),
    ("--large-rate", "large_rate", float, "random method: probability of a large step"),
    (
        "--glimpse-mode",
        "glimpse_mode",
        str,
        "stream (default: one request per small step) or probe",
    ),
    ("--top-k", "top_k", int, "top log-probabilities the glimpse entropy is computed over"),
    ("--token-budget", "token_budget", int, "most reasoning tokens over all steps"),
    ("--step-max-tokens", "step_max_tokens", int, "most tokens of one step"),
    ("--max-steps", "max_steps", int, "most reasoning steps"),
    ("--answer-model", "answer_model", str, "model that writes the final answer: small or large"),
    ("--answer-max-tokens", "answer_max_tokens", int, "most tokens of the final answer"),
    ("--temperature", "temperature", float, "sampling temperature of steps and answer"),
    ("--top-p", "top_p", float, "nucleus top-p of steps and answer"),
    ("--seed", "seed", int, "sampling seed sent with every request"),
    ("--request-timeout", "request_timeout", float, "seconds to wait for one model request"),
    ("--max-retries", "max_retries", int, "retries of a failed request"),
]


def add_context_flags(
    parser: argparse.ArgumentParser, parsers: Mapping[str, Callable[[str], Any]] | None = None
) -> None:
    """Routing and endpoint flags; unset flags fall back to GLIMPROUTER_* variables, then
    defaults. `parsers` replaces the value parser of some fields (a command that accepts more,
    such as eval's `--large-rate match:DIR`, resolves those values itself)."""
    group = parser.add_argument_group("routing and endpoints (default: GLIMPROUTER_* or built-in)")
    for flag, field_name, kind, help_text in CONTEXT_FLAGS:
        kind = (parsers or {}).get(field_name, kind)
        group.add_argument(flag, dest=field_name, type=kind, default=None, help=help_text)
    for role in MODEL_ROLES:
        group.add_argument(
            f"--{role}-api-key-file",
            type=Path,
            default=None,
            help=f"file holding the {role} model server's API key (its first line)",
        )


def context_from_args(args: argparse.Namespace) -> RouterContext:
    """A RouterContext from the flags the user gave; an API key given on the command line
    (which every user of the machine sees in ps) is used, with a warning."""
    given = {
        field_name: getattr(args, field_name)
        for _, field_name, _, _ in CONTEXT_FLAGS
        if getattr(args, field_name, None) is not None
    }
    for role in MODEL_ROLES:
        key_file = getattr(args, f"{role}_api_key_file", None)
        if key_file is not None:
            given[f"{role}_api_key"] = read_key_file(key_file, f"--{role}-api-key-file")
        elif f"{role}_api_key" in given:
            print(
                f"glimprouter: warning: --{role}-api-key shows in ps to every user of this "
                f"machine: use --{role}-api-key-file or GLIMPROUTER_{role.upper()}_API_KEY",
                file=sys.stderr,
            )
    return RouterContext(**given)
