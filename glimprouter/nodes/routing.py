"""Who writes the next step: the one decision the streamed glimpse and `decide` share, and the
view of the step a strategy decides and reviews on."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from glimprouter.graph.context import ModelRole, RouterContext
from glimprouter.graph.state import RouterState
from glimprouter.nodes.common import steps_of
from glimprouter.strategies import StepView, Strategy


def routing_key(context: RouterContext, question: str, step_index: int) -> str:
    """Seed of a step's random choice: per run, question and step, so a random baseline
    repeats exactly."""
    return f"{context.seed}|{question}|{step_index}"


def step_view(
    state: RouterState,
    context: RouterContext,
    strategy: Strategy,
    entropy: float | None = None,
    top_logprobs: Sequence[dict[str, Any]] | None = None,
    **handles: Any,
) -> StepView:
    """What `strategy` sees of the step about to be written after `state`'s steps."""
    steps = steps_of(state)
    return StepView(
        index=len(steps),
        entropy=entropy,
        top_logprobs=top_logprobs,
        steps=steps,
        context=context,
        knobs=strategy.knobs_of(context.knobs),
        key=routing_key(context, state["question"], len(steps)),
        **handles,
    )


def next_writer(
    state: RouterState,
    context: RouterContext,
    strategy: Strategy,
    entropy: float | None,
    top_logprobs: Sequence[dict[str, Any]] | None = None,
) -> ModelRole:
    """The model that writes the next step, as the strategy decides from the glimpse."""
    return strategy.decide(step_view(state, context, strategy, entropy, top_logprobs))
