"""glimpse: the small model writes one token of the next step; its top-k entropy is the score."""

from __future__ import annotations

from typing import Any

from langgraph.runtime import Runtime

from glimprouter.graph.context import RouterContext
from glimprouter.graph.state import RouterState
from glimprouter.models import ContextOverflow, complete
from glimprouter.nodes.common import prompt_args, run_strategy, step_texts
from glimprouter.prompts import next_step_messages
from glimprouter.scoring import top_k_entropy


async def glimpse(state: RouterState, runtime: Runtime[RouterContext]) -> dict[str, Any]:
    """Score how unsure the small model is about how to start the next step (for the methods
    that glimpse; the others go straight on)."""
    context, strategy = run_strategy(runtime)
    if not strategy.glimpses:
        return {"glimpse_entropy": None}
    try:
        probe = await complete(
            context,
            "small",
            next_step_messages(step_texts=step_texts(state), **prompt_args(state)),
            max_tokens=1,
            temperature=0.0,
            top_logprobs=context.top_k,
            stream=False,
        )
    except ContextOverflow:
        return {"stop_reason": "context_length"}
    return {
        "glimpse_entropy": top_k_entropy(probe.first_token_top_logprobs),
        "usage": probe.usage("small"),
    }
