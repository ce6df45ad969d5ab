"""Request validation: a chat completion body checked against the request model, each refusal an
OpenAI error naming the field, then turned into the question, the task and the run's
RouterContext within the server's limits."""

from __future__ import annotations

import dataclasses
import functools
import json
from typing import Any

from pydantic import ValidationError

from glimprouter.endpoint.errors import RequestError
from glimprouter.endpoint.limits import DEFAULT_MODEL_NAME, Bounds, refusal
from glimprouter.endpoint.messages import question_of
from glimprouter.endpoint.protocol import (
    BUDGET_ALIASES,
    MESSAGE_ROLES,
    UNSUPPORTED_FIELDS,
    ChatCompletionRequest,
    request_model,
)
from glimprouter.errors import ConfigError
from glimprouter.graph.context import RouterContext
from glimprouter.graph.settings import request_knobs
from glimprouter.prompts import TEMPLATES
from glimprouter.strategies import STRATEGIES


@dataclasses.dataclass(frozen=True)
class ChatRequest:
    """A validated chat completion request: the question and the run's settings."""

    question: str
    task: str
    context: RouterContext
    stream: bool
    include_usage: bool
    thread_id: str | None = None
    api_key: bytes | None = None
    """The SHA-256 digest of the request's API key (None on a server without keys): whose
    threads it may see."""


def parse_chat_request(
    body: Any,
    base: RouterContext,
    limits: Bounds,
    *,
    served_model_name: str = DEFAULT_MODEL_NAME,
    default_task: str = "math",
) -> ChatRequest:
    """Check a request body and build its run; every refusal is a RequestError that names the
    field. `limits` are the resolved `bounds`."""
    model = request_model(type(base))
    try:
        request = model.model_validate(body)
    except ValidationError as error:
        raise _refusal(error, body, model) from None
    for name in UNSUPPORTED_FIELDS:
        if getattr(request, name) not in (None, False, "", [], {}):  # 0 == False: a zero passes
            raise RequestError(
                400,
                f"{name} is not supported: GlimpRouter writes one plain-text chain of thought "
                "and answer per request",
                param=name,
                code="unsupported_parameter",
            )
    if request.model is None:
        raise RequestError(
            400, f"model is required: this server serves {served_model_name!r}", param="model"
        )
    if request.model != served_model_name:
        raise RequestError(
            404,
            f"the model {request.model!r} does not exist; this server serves {served_model_name!r}",
            param="model",
            code="model_not_found",
        )
    if request.n not in (None, 1):
        raise RequestError(
            400,
            f"n={request.n} is not supported: GlimpRouter writes one chain of thought per "
            "request (send n requests instead)",
            param="n",
            code="unsupported_parameter",
        )
    question = question_of(request.messages)
    # UTF-8 bytes bound the tokens from above (a byte-level BPE token is at least one byte),
    # with no tokenizer at hand; surrogates, which JSON may carry, count as what they escape.
    if len(question.encode("utf-8", "surrogatepass")) > limits.question_tokens:
        raise RequestError(
            400,
            f"the question is longer than this server's limit of {limits.question_tokens} "
            "tokens, counted as its UTF-8 bytes (--max-question-tokens)",
            param="messages",
            code="question_too_long",
        )
    task = request.task or default_task
    if task not in TEMPLATES:
        raise RequestError(
            400, f"unknown task {task!r}; valid tasks: {sorted(TEMPLATES)}", param="task"
        )
    return ChatRequest(
        question=question,
        task=task,
        context=_run_context(request, base, limits),
        stream=bool(request.stream),
        include_usage=bool(request.stream_options and request.stream_options.include_usage),
        thread_id=request.thread_id,
    )


def _refusal(error: ValidationError, body: Any, model: type[ChatCompletionRequest]) -> RequestError:
    """The one error a client is told about: every unknown field at once, else the first wrong
    value, in the words of the JSON schema the endpoint publishes."""
    problems = error.errors(include_url=False)
    if not isinstance(body, dict):
        return RequestError(400, "the request body must be a JSON object", code="invalid_body")
    unknown = sorted(str(p["loc"][0]) for p in problems if p["type"] == "extra_forbidden")
    if unknown:
        return RequestError(
            400,
            f"unknown field(s) {unknown}; accepted fields: {sorted(model.model_fields)}",
            param=unknown[0],
            code="unknown_parameter",
        )
    loc = problems[0]["loc"]
    name = str(loc[0])
    if name == "messages" and len(loc) > 1:
        return RequestError(
            400,
            f"messages[{loc[1]}] must be an object whose role is one of {list(MESSAGE_ROLES)}",
            param=f"messages[{loc[1]}]",
        )
    if name == "stream_options" and len(loc) > 1:
        return RequestError(
            400,
            f"stream_options.{loc[1]} must be {_json_kinds(model)[name, loc[1]]}",
            param=name,
        )
    if problems[0]["type"] == "string_unicode":  # valid JSON, but no Unicode text
        return RequestError(
            400,
            f"{name} must be Unicode text: it holds an unpaired surrogate escape (\\ud800-\\udfff)",
            param=name,
            code="invalid_value",
        )
    shown = json.dumps(body[name])
    shown = shown if len(shown) <= 40 else shown[:37] + "..."
    return RequestError(
        400,
        f"{name} must be {_json_kinds(model)[name,]}, not {shown}",
        param=name,
        code="invalid_type",
    )


JSON_KINDS = {
    "boolean": "a boolean",
    "integer": "a 64-bit integer",  # every integer field is bounded to int64
    "number": "a finite number",
    "string": "a string",
    "array": "an array",
    "object": "an object",
}


@functools.cache
def _json_kinds(model: type[ChatCompletionRequest]) -> dict[tuple[str, ...], str]:
    """What each field (and each field of an object field) must be, read from the model's JSON
    schema: a number field takes integers too."""
    schema = model.model_json_schema()
    definitions = schema.get("$defs", {})

    def kind(prop: dict[str, Any]) -> str | None:
        if "$ref" in prop:
            return "object"
        types = {kind(option) for option in prop.get("anyOf", [])} or {prop.get("type")}
        types -= {None, "null"}
        return "number" if "number" in types else next(iter(types), None)

    def described(
        properties: dict[str, Any], prefix: tuple[str, ...]
    ) -> dict[tuple[str, ...], str]:
        kinds = {}
        for name, prop in properties.items():
            if found := kind(prop):
                kinds[(*prefix, name)] = JSON_KINDS[found]
            refs = [prop.get("$ref")] + [option.get("$ref") for option in prop.get("anyOf", [])]
            for ref in filter(None, refs):
                nested = definitions[ref.rsplit("/", 1)[1]].get("properties", {})
                kinds |= described(nested, (*prefix, name))
        return kinds

    return described(schema["properties"], ())


def _run_context(
    request: ChatCompletionRequest, base: RouterContext, limits: Bounds
) -> RouterContext:
    """The base context with the request's knobs, validated by RouterContext, then held within
    what the server allows."""
    given = {name: getattr(request, name) for name in request.model_fields_set}
    given = {name: value for name, value in given.items() if value is not None}
    knobs = {name: value for name, value in given.items() if name in request_knobs(type(base))}
    origin = {name: name for name in knobs}  # context field -> the body field that set it
    budgets = [name for name in (*BUDGET_ALIASES, "token_budget") if name in given]
    if len(budgets) > 1:
        raise RequestError(
            400,
            f"give only one of {budgets}: each sets the reasoning token budget",
            param=budgets[1],
        )
    if budgets:
        knobs["token_budget"] = given[budgets[0]]
        origin["token_budget"] = budgets[0]
    if knobs.get("method") not in (None, *STRATEGIES):
        # Refused before RouterContext reads it: a request names a method the server has
        # registered, never an import path for it to import.
        allowed, flag = limits.choices["method"]
        raise RequestError(
            400,
            f"method={knobs['method']!r} is not a method this server runs: it allows "
            f"{list(allowed)} ({flag})",
            param="method",
            code="value_not_allowed",
        )
    if knobs.get("method", base.method) != base.method and "knobs" not in knobs:
        knobs["knobs"] = ""  # the server's own knobs are its method's: another starts at defaults
        origin["knobs"] = "method"
    try:
        context = dataclasses.replace(base, **knobs)
    except ConfigError as error:
        message = str(error)
        named = [field for field in origin if field in message]
        param = origin[min(named, key=message.index)] if named else None
        raise RequestError(400, message, param=param, code="invalid_value") from None
    if refused := refusal(context, limits, origin):
        name = origin.get(refused.knob, refused.knob)
        raise RequestError(400, refused.message, param=name, code=refused.code)
    return context
