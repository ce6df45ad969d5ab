"""What every node reads from the state and the runtime."""

from __future__ import annotations

from typing import Any

from langgraph.config import get_stream_writer
from langgraph.runtime import Runtime

from glimprouter.graph.context import RouterContext, resolve_context
from glimprouter.graph.state import ModelUsage, RouterState, Step
from glimprouter.model_servers.client import new_chain_id
from glimprouter.strategies import Strategy, get_strategy


def run_context(runtime: Runtime[RouterContext]) -> RouterContext:
    """The run's settings; defaults (and GLIMPROUTER_* variables) when the caller passed none."""
    return resolve_context(runtime.context)


def run_strategy(runtime: Runtime[RouterContext]) -> tuple[RouterContext, Strategy]:
    """The run's settings and its routing strategy."""
    context = run_context(runtime)
    return context, get_strategy(context.method)


def chain_id_of(state: RouterState) -> str:
    """The id that pins the chain's requests to its replicas (`new_chain_id` for a state that
    has none yet: the graph's first glimpse records one)."""
    return state.get("chain_id") or new_chain_id()


def commit_step(step: Step) -> dict[str, Any]:
    """Append a finished step to the chain and stream it to whoever watches."""
    get_stream_writer()({"event": "step", **step})
    return {"steps": [step]}


def steps_of(state: RouterState) -> list[Step]:
    return state.get("steps") or []


def prompt_args(state: RouterState, context: RouterContext) -> dict[str, Any]:
    """Question, task and template: what selects and fills the prompt; and the separator the
    chain's steps are joined with."""
    return {
        "question": state["question"],
        "task": state.get("task") or "math",
        "template": state.get("prompt_template"),
        "separator": context.step_separator,
    }


def step_texts(state: RouterState) -> list[str]:
    return [step["text"] for step in steps_of(state)]


def reasoning_tokens(steps: list[Step]) -> int:
    """Tokens spent on reasoning steps so far (what the token budget counts)."""
    return sum(step["completion_tokens"] for step in steps)


def generated_tokens(usage: dict[str, ModelUsage] | None) -> int:
    """Tokens the models generated over every request so far (what max_chain_tokens counts)."""
    return sum(counts["completion_tokens"] for counts in (usage or {}).values())


def chain_tokens_left(limit: int | None, answer_max_tokens: int, generated: int) -> int | None:
    """Tokens the reasoning may still generate under max_chain_tokens `limit`, the answer's
    allowance kept aside so that it is always written; None when the chain has no such bound."""
    if limit is None:
        return None
    return max(0, limit - answer_max_tokens - generated)


def chain_allowance(state: RouterState, context: RouterContext) -> int | None:
    """What max_chain_tokens leaves the reasoning of this run so far (`chain_tokens_left`)."""
    generated = generated_tokens(state.get("usage"))
    return chain_tokens_left(context.max_chain_tokens, context.answer_max_tokens, generated)


def prompt_tokens_sent(usage: dict[str, ModelUsage] | None) -> int:
    """Prompt tokens the chain's requests sent so far (what max_chain_prompt_tokens counts)."""
    return sum(counts["prompt_tokens"] for counts in (usage or {}).values())


# The most requests one step of any strategy sends, each with the chain so far as its prompt:
# specreason's draft, its judge call and the large model's rewrite (a glimpse and a step, or a
# draft and a rewrite, elsewhere).
MAX_REQUESTS_PER_STEP = 3


def next_prompt_tokens(steps: list[Step], step_max_tokens: int) -> int:
    """What one request of the next step may send as its prompt: the last step's prompt and
    text, with step_max_tokens more for a draft a judge call quotes, the separator and what a
    tokenizer counts differently joined (0 before the first step: the endpoint bounds the
    question by --max-question-tokens)."""
    if not steps:
        return 0
    last = steps[-1]
    return last["prompt_tokens"] + last["completion_tokens"] + step_max_tokens


def prompt_room_spent(state: RouterState, context: RouterContext) -> bool:
    """Whether another step could pass max_chain_prompt_tokens: its requests and then the
    answer's, each sending about `next_prompt_tokens`, over what the chain has sent."""
    ahead = next_prompt_tokens(steps_of(state), context.step_max_tokens)
    needed = prompt_tokens_sent(state.get("usage")) + (MAX_REQUESTS_PER_STEP + 1) * ahead
    return needed > context.max_chain_prompt_tokens


# What a node returns instead of a request the chain can no longer afford.
CHAIN_SPENT: dict[str, Any] = {"stop_reason": "max_chain_tokens", "draft_step": None}


def chain_spent(state: RouterState, context: RouterContext) -> bool:
    """Whether max_chain_tokens leaves the reasoning not one more token to generate."""
    return chain_allowance(state, context) == 0
