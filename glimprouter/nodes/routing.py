"""Who writes the next step: the one decision the streamed glimpse and `decide` share."""

from __future__ import annotations

from glimprouter.graph.context import ModelRole, RouterContext
from glimprouter.graph.state import RouterState
from glimprouter.nodes.common import steps_of
from glimprouter.strategies import Strategy


def routing_key(context: RouterContext, question: str, step_index: int) -> str:
    """Seed of a step's random choice: per run, question and step, so a random baseline
    repeats exactly."""
    return f"{context.seed}|{question}|{step_index}"


def next_writer(
    state: RouterState, context: RouterContext, strategy: Strategy, entropy: float | None
) -> ModelRole:
    """The model that writes the next step, by the strategy's rule on the glimpse's entropy."""
    key = routing_key(context, state["question"], len(steps_of(state)))
    return strategy.choose(entropy, context.threshold, context.large_rate, key)
