"""Response shaping: a run's result as the protocol's chat.completion, stream chunks and usage,
and the finish reason."""

from __future__ import annotations

import dataclasses
import time
import uuid
from typing import Any

from glimprouter.endpoint.protocol import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    Choice,
    ChunkChoice,
    CompletionTokensDetails,
    Delta,
    FinishReason,
    ModelUsage,
    RoutingUsage,
    Usage,
)
from glimprouter.graph.context import MODEL_ROLES
from glimprouter.nodes.common import reasoning_tokens
from glimprouter.prompts import STEP_SEPARATOR

# The chain of thought was cut before it concluded (the answer was then forced): OpenAI's "length".
CUT_SHORT = frozenset(
    {"token_budget", "max_steps", "max_chain_tokens", "max_chain_prompt_tokens", "context_length"}
)


def finish_reason(stop_reason: str | None, answer_cut: bool | None = False) -> FinishReason:
    """OpenAI's finish reason: "length" when the chain was cut short (a budget, the step limit, a
    full context) and the answer forced, or the answer stopped at answer_max_tokens; else "stop"."""
    return "length" if stop_reason in CUT_SHORT or answer_cut else "stop"


def usage_of(result: dict[str, Any]) -> Usage:
    """OpenAI usage summed over every request of the run, with the per-model breakdown."""
    per_model = {
        role: ModelUsage(**(result.get("usage") or {}).get(role, {})) for role in MODEL_ROLES
    }
    prompt = sum(usage.prompt_tokens for usage in per_model.values())
    completion = sum(usage.completion_tokens for usage in per_model.values())
    steps = result.get("steps") or []
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        completion_tokens_details=CompletionTokensDetails(reasoning_tokens=reasoning_tokens(steps)),
        glimprouter=RoutingUsage(
            **per_model,
            steps=len(steps),
            large_steps=sum(step["model"] == "large" for step in steps),
            stop_reason=result.get("stop_reason"),
        ),
    )


@dataclasses.dataclass(frozen=True)
class Reply:
    """The identity shared by a completion or all chunks of one stream."""

    model: str
    include_usage: bool = False
    step_separator: str = STEP_SEPARATOR
    """What joins the steps in reasoning_content: the chain's own separator."""
    id: str = dataclasses.field(default_factory=lambda: f"chatcmpl-{uuid.uuid4().hex}")
    created: int = dataclasses.field(default_factory=lambda: int(time.time()))

    def completion(self, result: dict[str, Any]) -> dict[str, Any]:
        """A chat.completion: the answer as content, the steps as reasoning_content."""
        message = AssistantMessage(
            content=result.get("answer") or "",
            reasoning_content=self.step_separator.join(
                step["text"] for step in result.get("steps") or []
            ),
        )
        finish = finish_reason(result.get("stop_reason"), result.get("answer_cut"))
        choice = Choice(message=message, finish_reason=finish)
        completion = ChatCompletion(**self._head(), choices=[choice], usage=usage_of(result))
        return completion.model_dump(mode="json")

    def chunk(self, delta: Delta, finish: FinishReason | None = None) -> dict[str, Any]:
        """A chat.completion.chunk; with include_usage every chunk carries usage null."""
        chunk = ChatCompletionChunk(
            **self._head(), choices=[ChunkChoice(delta=delta, finish_reason=finish)]
        )
        return self._dumped(chunk)

    def usage_chunk(self, result: dict[str, Any]) -> dict[str, Any]:
        """The last chunk of a stream with include_usage: no choices, the run's usage."""
        return self._dumped(ChatCompletionChunk(**self._head(), choices=[], usage=usage_of(result)))

    def _head(self) -> dict[str, Any]:
        return {"id": self.id, "created": self.created, "model": self.model}

    def _dumped(self, chunk: ChatCompletionChunk) -> dict[str, Any]:
        return chunk.model_dump(mode="json", exclude=None if self.include_usage else {"usage"})
