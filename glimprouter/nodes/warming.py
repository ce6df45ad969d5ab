"""Warming the idle model's prefix cache: while the small model writes a step, the large model's
server prefills the chain before it, so that when the large model takes over (a step, or the
answer) its prompt is already cached but for the small steps just written, instead of prefilled
whole on the critical path.

Only the large model is warmed. The small model glimpses before every step, so each step of the
chain reaches its server as the very next request anyway; the large model sits idle through runs
of small steps, and without warming its next step first prefills all of them.

The request goes out when a small step starts, not when it ends: the step's decoding is the time
the large server has to prefill, and a request sent at the step's end would still be prefilling
when a large step right after it arrives, the two computing the same prefix side by side.

A warming request is a task beside the chain, never awaited by it: at most one per chain is in
flight (a newer prefix supersedes an older request still running), the chain's end cancels it,
and a failure is logged at debug and forgotten. Its reply is thrown away and it is not counted
in the chain's usage, so no budget, routing decision or sampled token depends on it.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from typing import Any

from glimprouter.graph.context import RouterContext
from glimprouter.graph.state import RouterState, Step
from glimprouter.model_servers.client import prefill
from glimprouter.nodes.common import chain_id_of, prompt_args
from glimprouter.prompts import next_step_messages
from glimprouter.strategies import MODEL_ROLES, get_strategy

log = logging.getLogger(__name__)

# Warming requests in flight, by chain: held here because the event loop keeps only weak
# references to tasks.
_in_flight: dict[str, asyncio.Task[None]] = {}


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
    chain = chain_id_of(state)
    _start(chain, _warm(context, messages, chain))
    return {"warmed_steps": len(steps)}


def stop_warming(state: RouterState) -> None:
    """The chain is over: cancel its warming request, if one is still in flight."""
    if (chain := state.get("chain_id")) and (task := _in_flight.pop(chain, None)):
        task.cancel()


def _start(chain: str, warm: Any) -> None:
    if (older := _in_flight.get(chain)) is not None:
        older.cancel()  # its prefix is part of the newer one
    # A fresh context: the request stays out of the graph run's callbacks and token stream,
    # which may close before it ends.
    task = asyncio.get_running_loop().create_task(warm, context=contextvars.Context())
    _in_flight[chain] = task

    def forget(done: asyncio.Task[None]) -> None:
        if _in_flight.get(chain) is done:
            del _in_flight[chain]

    task.add_done_callback(forget)


async def _warm(context: RouterContext, messages: list[dict[str, str]], chain: str) -> None:
    try:
        await prefill(context, "large", messages, chain_id=chain)
    # Whatever fails (a server down, a full context, a refused request), the chain goes on: the
    # large model prefills the chain itself when it takes over, as without warming.
    except Exception as error:  # noqa: BLE001
        log.debug("warming the large model's prefix cache failed: %s", error)
