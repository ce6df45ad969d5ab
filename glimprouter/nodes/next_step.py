"""The next step's request and the trace record of its reply, whichever node sends it: the step
nodes, or the streamed glimpse that starts a small step itself."""

from __future__ import annotations

import time
from typing import Any

from glimprouter.graph.context import ModelRole, RouterContext
from glimprouter.graph.state import RouterState, Step
from glimprouter.model_servers.client import Completion
from glimprouter.nodes.common import (
    chain_allowance,
    chain_id_of,
    prompt_args,
    reasoning_tokens,
    step_texts,
    steps_of,
)
from glimprouter.parsing import split_step
from glimprouter.prompts import next_step_messages


def step_allowance(
    step_max_tokens: int, token_budget: int, tokens_used: int, chain_left: int | None = None
) -> int:
    """Most tokens the next step may take: the per-step cap, never past the budget of kept
    reasoning tokens nor past the `chain_left` of max_chain_tokens (None: no such bound)."""
    allowance = min(step_max_tokens, token_budget - tokens_used)
    if chain_left is not None:
        allowance = min(allowance, chain_left)
    return max(0, allowance)


def step_request(state: RouterState, context: RouterContext) -> dict[str, Any]:
    """The messages and sampling of the next step's request, whichever model writes it."""
    steps = steps_of(state)
    return {
        "messages": next_step_messages(step_texts=step_texts(state), **prompt_args(state, context)),
        "chain_id": chain_id_of(state),
        "max_tokens": step_allowance(
            context.step_max_tokens,
            context.token_budget,
            reasoning_tokens(steps),
            chain_allowance(state, context),
        ),
        "temperature": context.temperature,
        "top_p": context.top_p,
        "stop": [context.step_separator],
    }


def new_step(
    state: RouterState, context: RouterContext, role: ModelRole, result: Completion, started: float
) -> Step:
    """The trace record of a step `role` just wrote."""
    text, finish = split_step(result.text, result.finish_reason, context.step_separator)
    return {
        "index": len(steps_of(state)),
        "model": role,
        "entropy": state.get("glimpse_entropy"),
        "score": None,
        "draft": None,
        "text": text,
        "finish": finish,
        "completion_tokens": result.completion_tokens,
        "prompt_tokens": result.prompt_tokens,
        "cached_prompt_tokens": result.cached_prompt_tokens,
        "wall_s": round(time.perf_counter() - started, 4),
        "replica": result.replica,
    }
