"""The most one request to serve-router can cost, computed from the server's settings and limits:
what the README's endpoint section states for the defaults, and what the tests hold the fake
model servers' counts to."""

from __future__ import annotations

import dataclasses

from glimprouter.endpoint.limits import LIMITED, RouterLimits, default_chain_tokens
from glimprouter.graph.context import RouterContext
from glimprouter.nodes.common import MAX_REQUESTS_PER_STEP
from glimprouter.nodes.warming import may_warm, most_warming_requests_per_step


@dataclasses.dataclass(frozen=True)
class RequestCost:
    """Model requests answered, prompt tokens sent and completion tokens generated for one
    chain, at most."""

    model_requests: int
    prompt_tokens: int
    completion_tokens: int

    def __str__(self) -> str:
        return (
            f"{self.model_requests:,} model requests, {self.prompt_tokens:,} prompt tokens, "
            f"{self.completion_tokens:,} completion tokens"
        )


def worst_case_cost(base: RouterContext, limits: RouterLimits | None = None) -> RequestCost:
    """The most a request may make its chain cost on a server of `base` settings and `limits`,
    at the most of every knob a request may raise: every step at most MAX_REQUESTS_PER_STEP
    requests, and its warming requests where the two roles have servers of their own
    (`most_warming_requests_per_step`, whatever method a request picks), and the answer one;
    the prompts within max_chain_prompt_tokens; the completions within max_chain_tokens (the
    server's default when `base` sets none). A failed request's retries (max_retries) come on
    top, and so do the warming requests' prompts: each re-sends the chain so far, which the
    server's prefix cache holds but for the last WARM_EVERY_TOKENS (counted in the bound, they
    would stop a two-server chain at a fraction of its token budget)."""
    limits = limits or RouterLimits()
    if base.max_chain_tokens is None:  # as create_app gives it
        base = dataclasses.replace(base, max_chain_tokens=default_chain_tokens(limits, base))

    def most(knob: str) -> int:
        limit = getattr(limits, LIMITED[knob][0])
        return getattr(base, knob) if limit is None else limit

    warming = most_warming_requests_per_step(most("step_max_tokens")) if may_warm(base) else 0
    return RequestCost(
        model_requests=(MAX_REQUESTS_PER_STEP + warming) * most("max_steps") + 1,
        prompt_tokens=most("max_chain_prompt_tokens"),
        completion_tokens=most("max_chain_tokens"),
    )
