"""Request validation: a chat completion body checked field by field and turned into the
question, the task and the run's RouterContext within the server's limits."""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

from glimprouter.endpoint.errors import RequestError
from glimprouter.endpoint.knobs import (
    ACCEPTED_FIELDS,
    BUDGET_ALIASES,
    DEFAULT_MODEL_NAME,
    FIELD_KINDS,
    INT64,
    JSON_KINDS,
    KNOBS,
    LIMITED,
    UNSUPPORTED_FIELDS,
)
from glimprouter.endpoint.messages import question_of
from glimprouter.errors import ConfigError
from glimprouter.graph.context import RouterContext
from glimprouter.prompts import TEMPLATES


@dataclasses.dataclass(frozen=True)
class ChatRequest:
    """A validated chat completion request: the question and the run's settings."""

    question: str
    task: str
    context: RouterContext
    stream: bool
    include_usage: bool


def parse_chat_request(
    body: Any,
    base: RouterContext,
    limits: dict[str, int],
    *,
    served_model_name: str = DEFAULT_MODEL_NAME,
    default_task: str = "math",
) -> ChatRequest:
    """Check a request body and build its run; every refusal is a RequestError that names the
    field. `limits` are the resolved `bounds`."""
    if not isinstance(body, dict):
        raise RequestError(400, "the request body must be a JSON object", code="invalid_body")
    unknown = sorted(set(body) - set(ACCEPTED_FIELDS))
    if unknown:
        raise RequestError(
            400,
            f"unknown field(s) {unknown}; accepted fields: {ACCEPTED_FIELDS}",
            param=unknown[0],
            code="unknown_parameter",
        )
    for name in sorted(UNSUPPORTED_FIELDS & set(body)):
        if body[name] not in (None, False, "", [], {}):  # 0 == False: a zero penalty passes
            raise RequestError(
                400,
                f"{name} is not supported: GlimpRouter writes one plain-text chain of thought "
                "and answer per request",
                param=name,
                code="unsupported_parameter",
            )
    # null means "not given", as in OpenAI's API.
    given = {
        name: value for name, value in body.items() if value is not None and name in FIELD_KINDS
    }
    for name, value in given.items():
        _check_type(name, value, FIELD_KINDS[name])

    model = given.get("model")
    if model is None:
        raise RequestError(
            400, f"model is required: this server serves {served_model_name!r}", param="model"
        )
    if model != served_model_name:
        raise RequestError(
            404,
            f"the model {model!r} does not exist; this server serves {served_model_name!r}",
            param="model",
            code="model_not_found",
        )
    if given.get("n", 1) != 1:
        raise RequestError(
            400,
            f"n={given['n']} is not supported: GlimpRouter writes one chain of thought per "
            "request (send n requests instead)",
            param="n",
            code="unsupported_parameter",
        )
    question = question_of(given.get("messages"))
    task = given.get("task", default_task)
    if task not in TEMPLATES:
        raise RequestError(
            400, f"unknown task {task!r}; valid tasks: {sorted(TEMPLATES)}", param="task"
        )
    options = given.get("stream_options", {})
    include_usage = options.get("include_usage", False)
    if not isinstance(include_usage, bool):
        raise RequestError(
            400, "stream_options.include_usage must be a boolean", param="stream_options"
        )
    return ChatRequest(
        question=question,
        task=task,
        context=_run_context(given, base, limits),
        stream=given.get("stream", False),
        include_usage=include_usage,
    )


def _check_type(name: str, value: Any, kind: type) -> None:
    if kind is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        ok = ok and math.isfinite(value)  # 1e999 parses as infinity
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool) and -INT64 <= value < INT64
    else:
        ok = isinstance(value, kind)
    if not ok:
        shown = json.dumps(value)
        shown = shown if len(shown) <= 40 else shown[:37] + "..."
        raise RequestError(
            400, f"{name} must be {JSON_KINDS[kind]}, not {shown}", param=name, code="invalid_type"
        )


def _run_context(
    given: dict[str, Any], base: RouterContext, limits: dict[str, int]
) -> RouterContext:
    """The base context with the request's knobs, validated by RouterContext, then bounded."""
    knobs = {name: value for name, value in given.items() if name in KNOBS}
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
    try:
        context = dataclasses.replace(base, **knobs)
    except ConfigError as error:
        message = str(error)
        named = [field for field in origin if field in message]
        param = origin[min(named, key=message.index)] if named else None
        raise RequestError(400, message, param=param, code="invalid_value") from None
    for knob, bound in limits.items():
        value = getattr(context, knob)
        if value > bound:
            name = origin.get(knob, knob)
            raise RequestError(
                400,
                f"{name}={value} is above this server's limit of {bound} ({LIMITED[knob][1]})",
                param=name,
                code="value_above_limit",
            )
    return context
