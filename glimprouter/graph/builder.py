"""The routing graph, read top to bottom like the paper's figure.

START -> glimpse -> decide -> small_step | large_step -> check_termination
            ^                                                   |
            +------------------- next step ---------------------+-> answer -> END

In stream mode (glimpse_mode "stream", the default) the glimpse is the start of the small
model's step itself: it already picks the writer, and when the small model keeps the step it
writes it whole and parks it in `streamed_step`; `decide` then keeps that writer and
`small_step` only commits the parked step. Reviewing methods pass a small draft through
`review`, which keeps it or sends the step to `large_step` to rewrite.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Checkpointer

from glimprouter.graph.context import RouterContext
from glimprouter.graph.settings import MAX_STEPS_LIMIT
from glimprouter.graph.state import InputState, OutputState, RouterState
from glimprouter.nodes.answer import answer
from glimprouter.nodes.decide import decide, route_to_writer
from glimprouter.nodes.glimpse import glimpse
from glimprouter.nodes.review import review, route_after_review
from glimprouter.nodes.step import large_step, route_after_step, small_step
from glimprouter.nodes.termination import check_termination, route_after_check

Route = TypeVar("Route")


def inline(
    edge: Callable[[RouterState], Route],
) -> Callable[[RouterState], Coroutine[Any, Any, Route]]:
    """Run a routing function on the event loop: LangGraph hands a plain function to a worker
    thread, and the hop costs more than these few comparisons (three per step)."""

    async def route(state: RouterState) -> Route:
        return edge(state)

    route.__name__ = route.__qualname__ = edge.__name__
    return route


def build_graph(checkpointer: Checkpointer = None) -> CompiledStateGraph:
    """Compile the routing graph; pass a checkpointer to make runs durable and resumable."""
    builder = StateGraph(
        RouterState,
        context_schema=RouterContext,
        input_schema=InputState,
        output_schema=OutputState,
    )
    builder.add_node("glimpse", glimpse)
    builder.add_node("decide", decide)
    builder.add_node("small_step", small_step)
    builder.add_node("large_step", large_step)
    builder.add_node("review", review)
    builder.add_node("check_termination", check_termination)
    builder.add_node("answer", answer)

    builder.add_edge(START, "glimpse")
    builder.add_edge("glimpse", "decide")
    builder.add_conditional_edges(
        "decide", inline(route_to_writer), ["small_step", "large_step", "answer"]
    )
    builder.add_conditional_edges(
        "small_step", inline(route_after_step), ["review", "check_termination"]
    )
    builder.add_conditional_edges(
        "review", inline(route_after_review), ["large_step", "check_termination"]
    )
    builder.add_edge("large_step", "check_termination")
    builder.add_conditional_edges(
        "check_termination", inline(route_after_check), ["glimpse", "answer"]
    )
    builder.add_edge("answer", END)

    # Enough super-steps for the largest max_steps a context allows.
    compiled = builder.compile(checkpointer=checkpointer, name="GlimpRouter")
    return compiled.with_config(recursion_limit=RouterContext.recursion_limit_for(MAX_STEPS_LIMIT))


def run_config(context: RouterContext, **config: Any) -> dict[str, Any]:
    """A LangGraph run config whose recursion limit follows the run's step budget."""
    return {"recursion_limit": context.recursion_limit, **config}


graph = build_graph()
