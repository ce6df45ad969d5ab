"""How far a request may go: the server-side limits that bound the routing knobs a request sets,
checked against the server's own settings, and the bounds on load and on slow clients, each
declared once with its serve-router flag."""

from __future__ import annotations

import dataclasses
from typing import Any

from glimprouter.errors import ConfigError
from glimprouter.graph.context import RouterContext
from glimprouter.graph.settings import request_limits

DEFAULT_MODEL_NAME = "glimprouter"
# Chains that may wait for a place among --max-concurrency when --max-waiting is not given.
DEFAULT_MAX_WAITING = 64


def _server_flag(default: Any, flag: str, least: float, flag_help: str) -> Any:
    """A RouterLimits field with its serve-router flag (its argparse dest is the field's name):
    a count (int, at least `least`) or seconds (float, above `least`). A default other than None
    is added to the help."""
    kind = float if isinstance(default, float) else int
    metadata = {
        "flag": flag,
        "type": kind,
        "metavar": "SECONDS" if kind is float else "N",
        "least": least,
        "flag_help": flag_help if default is None else f"{flag_help} (default {default:g})",
    }
    return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass(frozen=True, kw_only=True)
class RouterLimits:
    """The most a request may ask for, and the most the server gives one client. A knob's limit
    left at None is the server's own setting, so by default a client may lower the budgets but
    not raise them."""

    max_token_budget: int | None = None
    max_steps_limit: int | None = None
    max_top_k: int | None = None
    max_answer_tokens: int | None = None
    max_concurrency: int | None = _server_flag(
        None, "--max-concurrency", 1,
        "chains of thought run at once; more requests wait (default: no bound)",
    )  # fmt: skip
    max_waiting: int | None = _server_flag(
        None, "--max-waiting", 0,
        "chains that may wait for --max-concurrency; beyond, a 429 with Retry-After "
        f"(default {DEFAULT_MAX_WAITING})",
    )  # fmt: skip
    max_streams_per_key: int = _server_flag(
        16, "--max-streams-per-key", 1,
        "streams one API key may hold open, another gets a 429; no bound with no key set",
    )  # fmt: skip
    header_timeout: float = _server_flag(
        10.0, "--header-timeout", 0,
        "seconds a client has to send a request's headers, from connecting or from the previous "
        "response; then the connection is closed",
    )  # fmt: skip
    body_timeout: float = _server_flag(
        30.0, "--body-timeout", 0,
        "seconds a client has to send a request's body once its headers are in; then a 408",
    )  # fmt: skip
    send_timeout: float = _server_flag(
        30.0, "--send-timeout", 0,
        "seconds a reply may wait on a client that reads nothing; then the connection is closed "
        "and its run stopped",
    )  # fmt: skip


# Request field -> (RouterLimits attribute, CLI flag) of the knobs with a server-side bound; the
# flag's argparse dest is the attribute (--max-steps itself is the server's default max_steps).
LIMITED: dict[str, tuple[str, str]] = request_limits(RouterContext)


def bounds(limits: RouterLimits, base: RouterContext) -> dict[str, int]:
    """The bound of each limited knob, or a ConfigError when the server's own settings break
    one."""
    resolved = {}
    for knob, (attribute, flag) in LIMITED.items():
        bound = getattr(limits, attribute)
        if bound is None:
            bound = getattr(base, knob)
        elif bound < 1:
            raise ConfigError(f"{flag} {bound} must be at least 1")
        elif getattr(base, knob) > bound:
            raise ConfigError(
                f"{knob}={getattr(base, knob)} is above {flag} {bound}: lower the one or raise "
                "the other"
            )
        resolved[knob] = bound
    for field in server_flags():
        value, least = getattr(limits, field.name), field.metadata["least"]
        flag = field.metadata["flag"]
        if value is None:
            continue
        if field.metadata["type"] is int and value < least:
            raise ConfigError(f"{flag} {value} must be at least {least}")
        if field.metadata["type"] is float and value <= least:
            raise ConfigError(f"{flag} {value} must be above {least}")
    if limits.max_waiting is not None and limits.max_concurrency is None:
        raise ConfigError("--max-waiting needs --max-concurrency: without it no chain waits")
    return resolved


def server_flags() -> list[dataclasses.Field]:
    """The RouterLimits fields that are serve-router flags of their own (not a knob's bound)."""
    return [f for f in dataclasses.fields(RouterLimits) if "flag" in f.metadata]
