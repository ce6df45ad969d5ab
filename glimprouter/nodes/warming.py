"""Warming the idle model's prefix cache: while the small model writes, the large model's server
prefills the chain so far, so that when the large model takes over (a step, or the answer) its
prompt is already cached instead of prefilled on the critical path.

Only the large model is warmed. The small model glimpses before every step, so each step of the
chain reaches its server as the very next request anyway; the large model sits idle through
runs of small steps, and without warming its next step first prefills all of them.

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
from glimprouter.graph.state import ModelUsage, RouterState, Step, add_usage
from glimprouter.model_servers.client import prefill
from glimprouter.nodes.common import chain_id_of, chain_tokens_left, generated_tokens, prompt_args
from glimprouter.nodes.termination import stop_reason
from glimprouter.prompts import next_step_messages
from glimprouter.strategies import MODEL_ROLES, get_strategy

log = logging.getLogger(__name__)

# Warming requests in flight, by chain: held here because the event loop keeps only weak
# references to tasks.
_in_flight: dict[str, asyncio.Task[None]] = {}


def large_holds(steps: list[Step], warmed: int) -> int:
    """How many steps of the chain the large model's server already holds as a cached prefix:
    through its own last step (its prompt and what it generated), or the last warmed prefix."""
    own = max((step["index"] + 1 for step in steps if step["model"] == "large"), default=0)
    return max(own, warmed)


def needs_warming(steps: list[Step], warmed: int, pays: bool, chain_ends: bool) -> bool:
    """Whether to warm the large model after the chain's last step: the small model wrote it,
    warming `pays` (`warming_pays`), and the large model's server lacks the prefix. Not when the
    chain ends here: the answer's request follows at once, so a warming request would only race
    it."""
    if not steps or chain_ends or not pays:
        return False
    return steps[-1]["model"] == "small" and large_holds(steps, warmed) < len(steps)


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


def warm_after_step(
    state: RouterState, context: RouterContext, step: Step, usage: dict[str, ModelUsage]
) -> dict[str, Any]:
    """After the small model's `step` (costing `usage`, not yet in `state`), send the chain so
    far to the large model's server to prefill, if it pays (`needs_warming`); the state update
    that records it."""
    if not context.warm_prefix_cache:
        return {}
    steps = [*(state.get("steps") or []), step]
    generated = generated_tokens(add_usage(state.get("usage"), usage))
    ends = stop_reason(
        steps,
        context.token_budget,
        context.max_steps,
        chain_tokens_left(context.max_chain_tokens, context.answer_max_tokens, generated),
    )
    warmed = state.get("warmed_steps") or 0
    if not needs_warming(steps, warmed, warming_pays(context), ends is not None):
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
