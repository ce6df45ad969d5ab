"""The wire format, declared once as pydantic models, as vLLM's own `protocol.py` does: the chat
completion request (its routing knobs derived from the settings' declarations), the responses,
the error object. Validation, the OpenAPI document and the response shapes all come from them."""

from __future__ import annotations

import functools
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model
from typing_extensions import TypedDict

from glimprouter.graph.context import RouterContext
from glimprouter.graph.settings import request_knobs

# vLLM takes 64-bit integers (e.g. the seed); a bigger JSON number would fail at the model server.
INT64 = 2**63
Int64 = Annotated[int, Field(ge=-INT64, lt=INT64)]
# A JSON number; an integer stays one, so that an error quotes the value the client sent.
Number = Int64 | float
WIRE_TYPES: dict[type, Any] = {bool: bool, int: Int64, float: Number, str: str}

MESSAGE_ROLES = ("system", "developer", "user", "assistant", "tool", "function")
# Bookkeeping fields that do not change the output: accepted and ignored.
IGNORED_FIELDS = ("user", "metadata", "store", "service_tier", "parallel_tool_calls")
# Features the router cannot honour: accepted only when unset, empty or off.
UNSUPPORTED_FIELDS = (
    "tools",
    "tool_choice",
    "functions",
    "function_call",
    "response_format",
    "logprobs",
    "top_logprobs",
    "stop",
    "logit_bias",
    "frequency_penalty",
    "presence_penalty",
    "audio",
    "modalities",
    "prediction",
    "reasoning_effort",
)
BUDGET_ALIASES = ("max_tokens", "max_completion_tokens")

# JSON as the standard has it: no NaN or Infinity (1e999 parses as infinity), no bool for a number.
STRICT_JSON = ConfigDict(strict=True, allow_inf_nan=False)


class ChatMessage(BaseModel):
    """One message of the conversation. Only the last one, the user's question, is read: its
    content is checked where the question is taken from it."""

    model_config = STRICT_JSON | ConfigDict(extra="allow")

    role: Literal[MESSAGE_ROLES]  # type: ignore[valid-type]
    content: Any = None


class StreamOptions(BaseModel):
    model_config = STRICT_JSON | ConfigDict(extra="allow")

    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """OpenAI's chat completion request as the router reads it; null means "not given". The
    routing knobs are added per settings class by `request_model`; a knob that would make the
    chain cost more than the server's own settings is refused (a 400 naming the field and the
    server flag that allows it)."""

    model_config = STRICT_JSON | ConfigDict(extra="forbid")

    model: str | None = None
    messages: list[ChatMessage] | None = Field(
        None, description="The last message, a user message, is the question."
    )
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    n: Int64 | None = Field(None, description="Only 1: one chain of thought per request.")
    max_tokens: Int64 | None = Field(None, description="The reasoning token budget.")
    max_completion_tokens: Int64 | None = Field(None, description="The reasoning token budget.")
    task: str | None = Field(None, description="The prompt template: math, code, plain, ...")
    thread_id: str | None = Field(
        None,
        description="Keep the chain under this id (a server started with --checkpoint-db): it is "
        "saved after every step, and a later request with the same id and question resumes it "
        "or, once finished, returns it without asking a model again.",
        min_length=1,
        max_length=256,
    )


def _extra_fields() -> dict[str, Any]:
    ignored = {
        name: (Any, Field(None, description="Accepted and ignored.")) for name in IGNORED_FIELDS
    }
    unsupported = {
        name: (
            Any,
            Field(None, description="Not supported: accepted only when unset, empty or off."),
        )
        for name in UNSUPPORTED_FIELDS
    }
    return ignored | unsupported


@functools.cache
def request_model(context_type: type[RouterContext] = RouterContext) -> type[ChatCompletionRequest]:
    """The request model of a settings class: the standard fields plus every setting declared
    `request=True`, described as the setting is."""
    descriptions = {
        name: field.metadata["description"]
        for name, field in context_type.__dataclass_fields__.items()
    }
    knobs = {
        name: (WIRE_TYPES[kind] | None, Field(None, description=descriptions[name]))
        for name, kind in request_knobs(context_type).items()
    }
    return create_model(
        "ChatCompletionRequest",
        __base__=ChatCompletionRequest,
        __doc__=ChatCompletionRequest.__doc__,
        **_extra_fields(),
        **knobs,
    )


class ErrorObject(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class WrittenSoFar(BaseModel):
    """What a chain a model server cut had written: its steps, which a later request with its
    thread_id resumes after."""

    reasoning_content: str
    steps: int


class ErrorResponse(BaseModel):
    """Every refusal and failure, as OpenAI's API and SDKs shape it; a chain cut by a failing
    model server adds what it had written."""

    error: ErrorObject
    glimprouter: WrittenSoFar | None = None


class ModelUsage(BaseModel):
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_prompt_tokens: int = 0
    """Of prompt_tokens, those the model server's prefix cache served (where it reports them)."""
    counted_prompt_tokens: int = 0
    """Of prompt_tokens, those of the requests whose server reported its cache: the hit rate is
    cached_prompt_tokens over these."""


class RoutingUsage(BaseModel):
    """GlimpRouter's own usage: each model's share and the chain's shape."""

    small: ModelUsage
    large: ModelUsage
    steps: int
    large_steps: int
    stop_reason: str | None


class CompletionTokensDetails(BaseModel):
    reasoning_tokens: int


class Usage(BaseModel):
    """Summed over every request of the run to both models."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    completion_tokens_details: CompletionTokensDetails
    glimprouter: RoutingUsage


FinishReason = Literal["stop", "length"]


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str
    reasoning_content: str = Field(
        description="The chain of thought, its steps joined by the step separator (a blank line by "
        "default)."
    )


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    logprobs: None = None
    finish_reason: FinishReason


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage


class Delta(TypedDict, total=False):
    """What a chunk adds: the role once, then reasoning_content (a step) or content (the answer)."""

    role: Literal["assistant"]
    content: str
    reasoning_content: str


class ChunkChoice(BaseModel):
    index: int = 0
    delta: Delta
    logprobs: None = None
    finish_reason: FinishReason | None = None


class ChatCompletionChunk(BaseModel):
    """One server-sent event of a stream. With include_usage every chunk has usage, null until
    the last, which has no choices."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "glimprouter"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class Health(BaseModel):
    """The router's load: chains running and waiting for a slot, and the most run at once."""

    status: Literal["ok"] = "ok"
    running: int
    waiting: int
    peak_running: int
