"""decide: the threshold rule that picks the writer of the next step."""

from __future__ import annotations

from typing import Any, Literal

from langgraph.runtime import Runtime

from glimprouter.graph.context import ModelRole, RouterContext
from glimprouter.graph.state import RouterState
from glimprouter.nodes.common import run_context


def choose_writer(entropy: float, threshold: float) -> ModelRole:
    """The paper's rule: an entropy at or above the threshold goes to the large model."""
    return "large" if entropy >= threshold else "small"


async def decide(state: RouterState, runtime: Runtime[RouterContext]) -> dict[str, Any]:
    """Pick the model that writes the next step."""
    if state.get("stop_reason"):
        return {}
    return {"writer": choose_writer(state["glimpse_entropy"], run_context(runtime).threshold)}


def route_to_writer(state: RouterState) -> Literal["small_step", "large_step", "answer"]:
    """Edge after decide: to the chosen writer, or straight to the answer if the chain ended."""
    if state.get("stop_reason"):
        return "answer"
    return "large_step" if state["writer"] == "large" else "small_step"
