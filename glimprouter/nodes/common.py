"""What every node reads from the state and the runtime."""

from __future__ import annotations

from typing import Any

from langgraph.config import get_stream_writer
from langgraph.runtime import Runtime

from glimprouter.graph.context import RouterContext, resolve_context
from glimprouter.graph.state import RouterState, Step
from glimprouter.strategies import Strategy, get_strategy


def run_context(runtime: Runtime[RouterContext]) -> RouterContext:
    """The run's settings; defaults (and GLIMPROUTER_* variables) when the caller passed none."""
    return resolve_context(runtime.context)


def run_strategy(runtime: Runtime[RouterContext]) -> tuple[RouterContext, Strategy]:
    """The run's settings and its routing strategy."""
    context = run_context(runtime)
    return context, get_strategy(context.method)


def commit_step(step: Step) -> dict[str, Any]:
    """Append a finished step to the chain and stream it to whoever watches."""
    get_stream_writer()({"event": "step", **step})
    return {"steps": [step]}


def steps_of(state: RouterState) -> list[Step]:
    return state.get("steps") or []


def prompt_args(state: RouterState) -> dict[str, Any]:
    """Question, task and template: what selects and fills the prompt."""
    return {
        "question": state["question"],
        "task": state.get("task") or "math",
        "template": state.get("prompt_template"),
    }


def step_texts(state: RouterState) -> list[str]:
    return [step["text"] for step in steps_of(state)]


def reasoning_tokens(steps: list[Step]) -> int:
    """Tokens spent on reasoning steps so far (what the token budget counts)."""
    return sum(step["completion_tokens"] for step in steps)
