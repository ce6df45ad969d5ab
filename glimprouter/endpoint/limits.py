"""How far a request may go: the server-side limits that bound the routing knobs a request sets,
checked against the server's own settings."""

from __future__ import annotations

import dataclasses

from glimprouter.errors import ConfigError
from glimprouter.graph.context import RouterContext
from glimprouter.graph.settings import request_limits

DEFAULT_MODEL_NAME = "glimprouter"


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
