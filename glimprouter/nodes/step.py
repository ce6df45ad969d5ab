"""small_step and large_step: one implementation that lets either model write the next step."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from langgraph.config import get_stream_writer
from langgraph.runtime import Runtime

from glimprouter.graph.context import ModelRole, RouterContext
from glimprouter.graph.state import RouterState, Step
from glimprouter.models import ContextOverflow, complete
from glimprouter.nodes.common import prompt_args, reasoning_tokens, run_context, steps_of
from glimprouter.parsing import split_step
from glimprouter.prompts import STEP_SEPARATOR, next_step_messages

StepNode = Callable[[RouterState, Runtime[RouterContext]], Awaitable[dict[str, Any]]]


def step_allowance(step_max_tokens: int, token_budget: int, tokens_used: int) -> int:
    """Most tokens the next step may take: the per-step cap, never past the budget."""
    return max(0, min(step_max_tokens, token_budget - tokens_used))


def make_step_node(role: ModelRole) -> StepNode:
    """The node in which `role` writes one step, ending at a blank line."""

    async def write_step(state: RouterState, runtime: Runtime[RouterContext]) -> dict[str, Any]:
        context = run_context(runtime)
        steps = steps_of(state)
        started = time.perf_counter()
        try:
            result = await complete(
                context,
                role,
                next_step_messages(
                    step_texts=[step["text"] for step in steps], **prompt_args(state)
                ),
                max_tokens=step_allowance(
                    context.step_max_tokens, context.token_budget, reasoning_tokens(steps)
                ),
                temperature=context.temperature,
                top_p=context.top_p,
                stop=[STEP_SEPARATOR],
            )
        except ContextOverflow:
            return {"stop_reason": "context_length"}
        text, finish = split_step(result.text, result.finish_reason)
        step: Step = {
            "index": len(steps),
            "model": role,
            "entropy": state["glimpse_entropy"],
            "text": text,
            "finish": finish,
            "completion_tokens": result.completion_tokens,
            "prompt_tokens": result.prompt_tokens,
            "wall_s": round(time.perf_counter() - started, 4),
        }
        get_stream_writer()({"event": "step", **step})
        return {"steps": [step], "usage": result.usage(role)}

    write_step.__name__ = write_step.__qualname__ = f"{role}_step"
    write_step.__doc__ = f"The {role} model writes the next reasoning step."
    return write_step


small_step = make_step_node("small")
large_step = make_step_node("large")
