"""check_termination: whether the chain of thought is over, and why."""

from __future__ import annotations

from typing import Any, Literal

from langgraph.runtime import Runtime

from glimprouter.graph.context import RouterContext
from glimprouter.graph.state import RouterState, Step, StopReason
from glimprouter.nodes.common import (
    chain_allowance,
    prompt_room_spent,
    reasoning_tokens,
    run_context,
    steps_of,
)
from glimprouter.prompts import THINK_CLOSE


def stop_reason(
    steps: list[Step], token_budget: int, max_steps: int, chain_left: int | None = None
) -> StopReason | None:
    """Why the chain ends after its last step, or None to go on; `chain_left` is what
    max_chain_tokens leaves the reasoning (None: no such bound)."""
    if not steps:
        return None
    last = steps[-1]
    if THINK_CLOSE in last["text"]:
        return "think_end"
    if last["finish"] == "end_of_sequence":
        return "end_of_sequence"
    if len(steps) >= 2 and steps[-2]["text"] == last["text"]:
        return "repeated_step"
    if reasoning_tokens(steps) >= token_budget:
        return "token_budget"
    if chain_left == 0:
        return "max_chain_tokens"
    if len(steps) >= max_steps:
        return "max_steps"
    return None


async def check_termination(state: RouterState, runtime: Runtime[RouterContext]) -> dict[str, Any]:
    """Record why the chain ends, if it does (a refused step has set its reason already)."""
    if state.get("stop_reason"):
        return {}
    context = run_context(runtime)
    reason = stop_reason(
        steps_of(state),
        context.token_budget,
        context.max_steps,
        chain_allowance(state, context),
    )
    if reason is None and prompt_room_spent(state, context):
        reason = "max_chain_prompt_tokens"
    return {"stop_reason": reason}


def route_after_check(state: RouterState) -> Literal["glimpse", "answer"]:
    """Edge after check_termination: another glimpse, or the answer."""
    return "answer" if state.get("stop_reason") else "glimpse"
