"""What a request may set and how far: the accepted body fields with their JSON types, the
routing knobs (RouterContext fields) and the server-side limits that bound them."""

from __future__ import annotations

import dataclasses

from glimprouter.errors import ConfigError
from glimprouter.graph.context import RouterContext
from glimprouter.graph.settings import request_knobs, request_limits

DEFAULT_MODEL_NAME = "glimprouter"


# vLLM takes 64-bit integers (e.g. the seed); a bigger JSON number would fail at the model server.
INT64 = 2**63

# Routing knobs a request may set (RouterContext fields declared with request=True), with the
# JSON type each takes. Endpoints, API keys, timeouts and retries stay server-side: a client
# must not redirect them.
KNOBS: dict[str, type] = request_knobs(RouterContext)
# Standard fields whose meaning the router keeps; max_tokens is the reasoning token budget.
STANDARD_FIELDS: dict[str, type] = {
    "model": str,
    "messages": list,
    "stream": bool,
    "stream_options": dict,
    "n": int,
    "max_tokens": int,
    "max_completion_tokens": int,
    "task": str,
}
BUDGET_ALIASES = ("max_tokens", "max_completion_tokens")
# Bookkeeping fields that do not change the output: accepted and ignored.
IGNORED_FIELDS = frozenset({"user", "metadata", "store", "service_tier", "parallel_tool_calls"})
# Features the router cannot honour: accepted only when unset, empty or off.
UNSUPPORTED_FIELDS = frozenset(
    {
        "tools",
        "tool_choice",
        "functions",
        "function_call",
        "response_format",
        "logprobs",
        "top_logprobs",
        "stop",
        "logit_bias",
        "frequency_penalty",
        "presence_penalty",
        "audio",
        "modalities",
        "prediction",
        "reasoning_effort",
    }
)
FIELD_KINDS = STANDARD_FIELDS | KNOBS
ACCEPTED_FIELDS = sorted({*FIELD_KINDS, *IGNORED_FIELDS, *UNSUPPORTED_FIELDS})


JSON_KINDS = {
    bool: "a boolean",
    int: "a 64-bit integer",
    float: "a finite number",
    str: "a string",
    list: "an array",
    dict: "an object",
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class RouterLimits:
    """The most a request may ask for. A limit left at None is the server's own setting, so by
    default a client may lower the budgets but not raise them."""

    max_token_budget: int | None = None
    max_steps_limit: int | None = None
    max_top_k: int | None = None
    max_answer_tokens: int | None = None
    max_concurrency: int | None = None
    """Chains of thought run at once; more requests wait their turn. None: no bound."""


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
    if limits.max_concurrency is not None and limits.max_concurrency < 1:
        raise ConfigError(f"--max-concurrency {limits.max_concurrency} must be at least 1")
    return resolved
