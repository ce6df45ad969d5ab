"""What every node reads from the state and the runtime."""

from __future__ import annotations

from typing import Any

from langgraph.runtime import Runtime

from glimprouter.graph.context import RouterContext, resolve_context
from glimprouter.graph.state import RouterState, Step


def run_context(runtime: Runtime[RouterContext]) -> RouterContext:
    """The run's settings; defaults (and GLIMPROUTER_* variables) when the caller passed none."""
    return resolve_context(runtime.context)


def steps_of(state: RouterState) -> list[Step]:
    return state.get("steps") or []


def prompt_args(state: RouterState) -> dict[str, Any]:
    """Question, task and template: what selects and fills the prompt."""
    return {
        "question": state["question"],
        "task": state.get("task") or "math",
        "template": state.get("prompt_template"),
    }


def reasoning_tokens(steps: list[Step]) -> int:
    """Tokens spent on reasoning steps so far (what the token budget counts)."""
    return sum(step["completion_tokens"] for step in steps)
