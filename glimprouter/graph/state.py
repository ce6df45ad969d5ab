"""State of the routing graph: what goes in, what comes out, and what the loop carries."""

from __future__ import annotations

import operator
from typing import Annotated, Any, Literal, NotRequired

from typing_extensions import TypedDict  # pydantic (Studio schemas) needs it before 3.12

from glimprouter.graph.context import ModelRole

TaskKind = Literal["math", "multiple_choice", "code", "plain"]

StopReason = Literal[
    "think_end",  # the chain closed its thinking with </think>
    "end_of_sequence",  # a model ended its output (EOS) inside the thinking
    "repeated_step",  # two identical steps in a row: the chain is looping
    "token_budget",  # the reasoning tokens reached token_budget
    "max_steps",  # the chain reached max_steps
    "max_chain_tokens",  # the tokens generated over every request reached max_chain_tokens
    # another step's prompts (and the answer's) could pass max_chain_prompt_tokens
    "max_chain_prompt_tokens",
    "context_length",  # the server refused the prompt: the model's context is full
    "endpoint_error",  # a model server failed mid-chain after its retries (see `error`)
]

StepFinish = Literal["separator", "end_of_sequence", "length"]


class RejectedDraft(TypedDict):
    """What a step keeps of the small model's draft that review handed to the large model."""

    text: str
    completion_tokens: int


class Step(TypedDict):
    """One reasoning step as written, with who wrote it and why."""

    index: int
    model: ModelRole
    entropy: float | None  # entropy (nats) of the small model's glimpse (glimpsing methods)
    score: float | None  # review score of the small draft (reviewing methods)
    draft: RejectedDraft | None  # the rejected small draft this step replaced
    text: str  # the step, without its "\n\n" separator
    finish: StepFinish
    completion_tokens: int
    prompt_tokens: int
    # Of prompt_tokens, those the server's prefix cache served (None: the server did not say).
    # Both count the request that wrote the step; a glimpse or probe before it is in `usage`.
    cached_prompt_tokens: NotRequired[int | None]
    wall_s: float
    replica: str  # base URL (without password) of the replica that wrote the step


class ModelUsage(TypedDict):
    """Requests and tokens spent on one model (glimpses included)."""

    requests: int
    prompt_tokens: int
    completion_tokens: int
    # Prompt tokens the prefix cache served, over the requests whose server said (a stream
    # closed after its first token, the glimpse handing a step to the large model, does not),
    # and all the prompt tokens of those requests: the hit rate is the one over the other.
    cached_prompt_tokens: NotRequired[int]
    counted_prompt_tokens: NotRequired[int]


def add_usage(
    total: dict[str, ModelUsage] | None, delta: dict[str, ModelUsage]
) -> dict[str, ModelUsage]:
    """Reducer: sums usage per model."""
    merged = {role: dict(counts) for role, counts in (total or {}).items()}
    for role, counts in delta.items():
        into = merged.setdefault(role, {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0})
        for key, value in counts.items():
            into[key] = into.get(key, 0) + value
    return merged  # type: ignore[return-value]


class InputState(TypedDict):
    """What a caller gives: the question, and optionally how to prompt for it."""

    question: str
    task: NotRequired[TaskKind]  # prompt family; default "math"
    prompt_template: NotRequired[str]  # overrides the task's template; must contain {question}


class OutputState(TypedDict):
    """What a run returns."""

    answer: str  # the text written after </think>
    final_answer: str | None  # content of the last \boxed{} (answer first, then the thinking)
    steps: Annotated[list[Step], operator.add]
    usage: Annotated[dict[str, ModelUsage], add_usage]
    stop_reason: StopReason | None
    error: NotRequired[str | None]  # why a model server failed, with stop_reason "endpoint_error"
    answer_cut: NotRequired[bool | None]  # the answer stopped at answer_max_tokens


class RouterState(InputState, OutputState):
    """The loop's full state: the output so far plus the pending routing decision."""

    glimpse_entropy: float | None  # entropy of the glimpse for the step about to be written
    # The probe's top-k candidates, for `decide` to show the strategy (None once it has).
    glimpse_top_logprobs: NotRequired[list[dict[str, Any]] | None]
    writer: ModelRole | None  # who writes that step (chosen by the streamed glimpse or decide)
    # The small model's draft of that step (reviewing methods): awaiting review, or rejected and
    # awaiting the large model's rewrite, which records it in its `draft`.
    draft_step: Step | None
    streamed_step: Step | None  # a small step the streamed glimpse already wrote, to be committed
    # What pins the chain's requests to one replica per role (set by its first glimpse, kept in
    # its checkpoints so that a resumed thread goes back to the same replicas).
    chain_id: str | None
    # Steps after the prompt in the prefix last sent to the idle large model's server to prefill
    # (nodes/warming.py; None: nothing sent yet).
    warmed_steps: NotRequired[int | None]
