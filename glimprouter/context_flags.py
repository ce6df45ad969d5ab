"""The command line's routing and endpoint flags, shared by every command that runs the graph:
each maps onto one RouterContext field, and unset ones fall back to GLIMPROUTER_* variables."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from glimprouter.graph.context import MODEL_ROLES, RouterContext
from glimprouter.graph.settings import cli_flags, read_key_file

# Flags that map one-to-one onto RouterContext fields (flag, field, type, help).
CONTEXT_FLAGS = cli_flags(RouterContext)


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
