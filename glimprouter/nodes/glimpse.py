"""glimpse: the small model writes one token of the next step; its top-k entropy is the score.

Two ways, same decisions. "stream" (default): the small model starts the step itself, streamed
with logprobs; after the first token the rule decides, and the stream either runs on (the small
step costs one request) or is cut off for the large model. "probe": a separate one-token request
before every step, as the reference code does.
"""

from __future__ import annotations

import time
from typing import Any

from langgraph.config import get_config
from langgraph.runtime import Runtime

from glimprouter.graph.context import RouterContext
from glimprouter.graph.state import RouterState
from glimprouter.model_servers.client import ContextOverflow, complete, new_chain_id
from glimprouter.model_servers.streaming import stream_step
from glimprouter.nodes.common import prompt_args, run_strategy, step_texts
from glimprouter.nodes.next_step import new_step, step_request
from glimprouter.nodes.routing import next_writer
from glimprouter.nodes.warming import warm_as_step_grows, warm_large_model
from glimprouter.prompts import next_step_messages
from glimprouter.scoring import TopLogprob, top_k_entropy
from glimprouter.strategies import Strategy


async def glimpse(state: RouterState, runtime: Runtime[RouterContext]) -> dict[str, Any]:
    """Score how unsure the small model is about how to start the next step (for the methods
    that glimpse; the others go straight on). The streamed glimpse also picks the writer, and
    writes the step when the small model keeps it; otherwise `decide` picks the writer.
    The chain's first glimpse gives it the id that pins its requests to replicas: its thread
    id when it runs in a thread, else a fresh one."""
    if state.get("chain_id"):
        return await _glimpse(state, runtime)
    chain = {"chain_id": get_config().get("configurable", {}).get("thread_id") or new_chain_id()}
    return {**chain, **await _glimpse({**state, **chain}, runtime)}  # type: ignore[typeddict-item]


async def _glimpse(state: RouterState, runtime: Runtime[RouterContext]) -> dict[str, Any]:
    context, strategy = run_strategy(runtime)
    if not strategy.glimpse:
        return {"glimpse_entropy": None, "writer": None}
    # At the chain's start the large model's server gets the prompt while the small model
    # glimpses: the large model may take the first step.
    warmed = {} if step_texts(state) else warm_large_model(state, context)
    state = {**state, **warmed}  # type: ignore[assignment]
    try:
        if context.glimpse_mode == "stream":
            return {**warmed, **await _streamed(state, context, strategy)}
        probe = await complete(
            context,
            "small",
            next_step_messages(step_texts=step_texts(state), **prompt_args(state, context)),
            chain_id=state["chain_id"],
            max_tokens=1,
            temperature=0.0,
            top_logprobs=context.top_k,
            stream=False,
        )
    except ContextOverflow:
        return {"stop_reason": "context_length", **warmed}
    return {
        "glimpse_entropy": top_k_entropy(probe.first_token_top_logprobs),
        "glimpse_top_logprobs": probe.first_token_top_logprobs,
        "writer": None,
        "usage": probe.usage("small"),
        **warmed,
    }


async def _streamed(
    state: RouterState, context: RouterContext, strategy: Strategy
) -> dict[str, Any]:
    warmed: list[dict[str, Any]] = []

    def small_keeps_it(top_logprobs: list[TopLogprob]) -> bool:
        entropy = top_k_entropy(top_logprobs)
        keeps = next_writer(state, context, strategy, entropy, top_logprobs) == "small"
        if keeps and not warmed:  # once, though a stream cut off and retried asks again
            warmed.append(warm_large_model(state, context))
        return keeps

    started = time.perf_counter()
    glimpsed = await stream_step(
        context,
        "small",
        keep=small_keeps_it,
        top_logprobs=context.top_k,
        on_text=warm_as_step_grows(state, context, "small"),
        **step_request(state, context),
    )
    update: dict[str, Any] = {
        "glimpse_entropy": top_k_entropy(glimpsed.first_token_top_logprobs),
        "writer": "small" if glimpsed.completion is not None else "large",
        "usage": glimpsed.usage("small"),
        **next(iter(warmed), {}),
    }
    if glimpsed.completion is not None:
        update["streamed_step"] = new_step(
            {**state, **update}, context, "small", glimpsed.completion, started
        )
    return update
