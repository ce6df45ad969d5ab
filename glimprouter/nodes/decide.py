"""decide: the routing strategy picks the writer of the next step."""

from __future__ import annotations

from typing import Any, Literal

from langgraph.runtime import Runtime

from glimprouter.graph.context import RouterContext
from glimprouter.graph.state import RouterState
from glimprouter.nodes.common import run_strategy, steps_of


async def decide(state: RouterState, runtime: Runtime[RouterContext]) -> dict[str, Any]:
    """Pick the model that writes (or, for reviewing methods, drafts) the next step."""
    if state.get("stop_reason"):
        return {}
    context, strategy = run_strategy(runtime)
    key = routing_key(context, state["question"], len(steps_of(state)))
    writer = strategy.choose(
        state.get("glimpse_entropy"), context.threshold, context.large_rate, key
    )
    return {"writer": writer}


def routing_key(context: RouterContext, question: str, step_index: int) -> str:
    """Seed of a step's random choice: per run, question and step, so a random baseline
    repeats exactly."""
    return f"{context.seed}|{question}|{step_index}"


def route_to_writer(state: RouterState) -> Literal["small_step", "large_step", "answer"]:
    """Edge after decide: to the chosen writer, or straight to the answer if the chain ended."""
    if state.get("stop_reason"):
        return "answer"
    return "large_step" if state["writer"] == "large" else "small_step"
