"""decide: the routing strategy picks the writer of the next step."""

from __future__ import annotations

from typing import Any, Literal

from langgraph.runtime import Runtime

from glimprouter.graph.context import RouterContext
from glimprouter.graph.state import RouterState
from glimprouter.nodes.common import run_strategy
from glimprouter.nodes.routing import next_writer


async def decide(state: RouterState, runtime: Runtime[RouterContext]) -> dict[str, Any]:
    """Pick the model that writes (or, for reviewing methods, drafts) the next step, unless the
    streamed glimpse has picked it already (it must, to know whether to let its stream run on)."""
    if state.get("stop_reason") or state.get("writer"):
        return {}
    context, strategy = run_strategy(runtime)
    glimpsed = state.get("glimpse_entropy"), state.get("glimpse_top_logprobs")
    writer = next_writer(state, context, strategy, *glimpsed)
    return {"writer": writer, "glimpse_top_logprobs": None}


def route_to_writer(state: RouterState) -> Literal["small_step", "large_step", "answer"]:
    """Edge after decide: to the chosen writer, or straight to the answer if the chain ended."""
    if state.get("stop_reason"):
        return "answer"
    return "large_step" if state["writer"] == "large" else "small_step"
