"""small_step and large_step: one implementation that lets either model write the next step."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from langgraph.runtime import Runtime

from glimprouter.graph.context import ModelRole, RouterContext
from glimprouter.graph.state import ModelUsage, RouterState
from glimprouter.model_servers.client import Completion, ContextOverflow, complete
from glimprouter.model_servers.streaming import stream_step
from glimprouter.nodes.common import CHAIN_SPENT, chain_spent, commit_step, run_strategy
from glimprouter.nodes.next_step import new_step, step_request
from glimprouter.nodes.warming import warm_as_step_grows, warm_large_model

StepNode = Callable[[RouterState, Runtime[RouterContext]], Awaitable[dict[str, Any]]]


def make_step_node(role: ModelRole) -> StepNode:
    """The node in which `role` writes one step, ending at a blank line.

    A small step the streamed glimpse already wrote is only recorded. Under a reviewing method
    the small model's step is a draft, held for review instead of joining the chain; a large
    step written after a rejected draft replaces it and records it. As the small model starts a
    step or draft, the idle large model's server is given the chain so far to prefill; a step
    that joins the chain is streamed where the other model's server is worth warming as it
    grows (nodes/warming.py).
    """

    async def write_step(state: RouterState, runtime: Runtime[RouterContext]) -> dict[str, Any]:
        context, strategy = run_strategy(runtime)
        if streamed := state.get("streamed_step"):
            # Its usage came with the glimpse that streamed it, which also warmed the large model.
            return {**commit_step(streamed), "streamed_step": None}
        if chain_spent(state, context):  # a glimpse, probe or judge call took the last tokens
            return CHAIN_SPENT
        drafting = role == "small" and strategy.drafts()
        scored_by_logprobs = drafting and strategy.draft_logprobs
        warmed = warm_large_model(state, context) if role == "small" else {}
        grows = None if drafting else warm_as_step_grows(state, context, role)
        top_logprobs = context.top_k if scored_by_logprobs else None
        started = time.perf_counter()
        try:
            result, usage = await _written(
                context, role, step_request(state, context), top_logprobs, grows
            )
        except ContextOverflow:
            return {"stop_reason": "context_length", "draft_step": None, **warmed}
        step = new_step(state, context, role, result, started)
        if drafting:
            if scored_by_logprobs and result.token_logprobs:
                # A draft whose logprobs hold nothing to score is kept, as an unscored one is.
                with contextlib.suppress(ValueError):
                    step["score"] = strategy.score_draft(result.token_logprobs)
            return {"draft_step": step, "usage": usage, **warmed}
        if rejected := state.get("draft_step"):
            step["score"] = rejected["score"]
            step["draft"] = {
                "text": rejected["text"],
                "completion_tokens": rejected["completion_tokens"],
            }
        return {**commit_step(step), "draft_step": None, "usage": usage, **warmed}

    write_step.__name__ = write_step.__qualname__ = f"{role}_step"
    write_step.__doc__ = f"The {role} model writes the next reasoning step."
    return write_step


async def _written(
    context: RouterContext,
    role: ModelRole,
    request: dict[str, Any],
    top_logprobs: int | None,
    grows: Callable[[str, int], None] | None,
) -> tuple[Completion, dict[str, ModelUsage]]:
    """The step `role` writes for `request`, and what it cost: streamed where the other model's
    server is warmed as it grows (`grows`), else in one reply."""
    if grows is None:
        result = await complete(context, role, top_logprobs=top_logprobs, **request)
        return result, result.usage(role)
    streamed = await stream_step(
        context, role, keep=None, top_logprobs=None, on_text=grows, **request
    )
    assert streamed.completion is not None  # only `keep` cancels a stream
    return streamed.completion, streamed.usage(role)


small_step = make_step_node("small")
large_step = make_step_node("large")


def route_after_step(state: RouterState) -> Literal["review", "check_termination"]:
    """Edge after a step: a held draft goes to review, a written step to the termination check."""
    return "review" if state.get("draft_step") else "check_termination"
