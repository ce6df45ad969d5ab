"""`glimprouter serve-router`: GlimpRouter as one model behind an OpenAI-compatible endpoint.

A thin layer over the compiled graph, as RouteLLM's server is over its controller. The last user
message is the question; routing knobs come in the request body (what the OpenAI SDK's
`extra_body` sends) and are checked against the server's limits; the chain of thought comes back
as `reasoning_content` and the answer as `content`, step by step when streamed. Every error is an
OpenAI-style error object, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import math
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from glimprouter.errors import ConfigError, EndpointError
from glimprouter.graph.builder import graph, run_config
from glimprouter.graph.context import MODEL_ROLES, RouterContext
from glimprouter.graph.invoke import run_question
from glimprouter.graph.state import OutputState
from glimprouter.models import check_endpoints
from glimprouter.nodes.common import reasoning_tokens
from glimprouter.prompts import STEP_SEPARATOR, TEMPLATES

log = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "glimprouter"
# Questions are text: a bigger body is a mistake or abuse, refused before it is parsed.
MAX_BODY_BYTES = 1 << 20
# vLLM takes 64-bit integers (e.g. the seed); a bigger JSON number would fail at the model server.
INT64 = 2**63

# Routing knobs a request may set, as RouterContext fields, with the JSON type each takes.
# Endpoints, API keys, timeouts and retries stay server-side: a client must not redirect them.
KNOBS: dict[str, type] = {
    "method": str,
    "threshold": float,
    "large_rate": float,
    "glimpse_mode": str,
    "top_k": int,
    "step_max_tokens": int,
    "token_budget": int,
    "max_steps": int,
    "answer_model": str,
    "answer_max_tokens": int,
    "temperature": float,
    "top_p": float,
    "seed": int,
}
# Standard fields whose meaning the router keeps; max_tokens is the reasoning token budget.
STANDARD_FIELDS: dict[str, type] = {
    "model": str,
    "messages": list,
    "stream": bool,
    "stream_options": dict,
    "n": int,
    "max_tokens": int,
    "max_completion_tokens": int,
    "task": str,
}
BUDGET_ALIASES = ("max_tokens", "max_completion_tokens")
# Bookkeeping fields that do not change the output: accepted and ignored.
IGNORED_FIELDS = frozenset({"user", "metadata", "store", "service_tier", "parallel_tool_calls"})
# Features the router cannot honour: accepted only when unset, empty or off.
UNSUPPORTED_FIELDS = frozenset(
    {
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
    }
)
FIELD_KINDS = STANDARD_FIELDS | KNOBS
ACCEPTED_FIELDS = sorted({*FIELD_KINDS, *IGNORED_FIELDS, *UNSUPPORTED_FIELDS})
MESSAGE_ROLES = ("system", "developer", "user", "assistant", "tool", "function")
# The chain of thought was cut before it concluded (the answer was then forced): OpenAI's "length".
CUT_SHORT = frozenset({"token_budget", "max_steps", "context_length"})
JSON_KINDS = {
    bool: "a boolean",
    int: "a 64-bit integer",
    float: "a finite number",
    str: "a string",
    list: "an array",
    dict: "an object",
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class RouterLimits:
    """The most a request may ask for. A limit left at None is the server's own setting, so by
    default a client may lower the budgets but not raise them."""

    max_token_budget: int | None = None
    max_steps_limit: int | None = None
    max_top_k: int | None = None
    max_answer_tokens: int | None = None
    max_concurrency: int | None = None
    """Chains of thought run at once; more requests wait their turn. None: no bound."""


# Request field -> (RouterLimits attribute, CLI flag) of the knobs with a server-side bound; the
# flag's argparse dest is the attribute (--max-steps itself is the server's default max_steps).
LIMITED: dict[str, tuple[str, str]] = {
    "token_budget": ("max_token_budget", "--max-token-budget"),
    "max_steps": ("max_steps_limit", "--max-steps-limit"),
    "top_k": ("max_top_k", "--max-top-k"),
    "answer_max_tokens": ("max_answer_tokens", "--max-answer-tokens"),
}


def bounds(limits: RouterLimits, base: RouterContext) -> dict[str, int]:
    """The bound of each limited knob, or a ConfigError when the server's own settings break
    one."""
    resolved = {}
    for knob, (attribute, flag) in LIMITED.items():
        bound = getattr(limits, attribute)
        if bound is None:
            bound = getattr(base, knob)
        elif bound < 1:
            raise ConfigError(f"{flag} {bound} must be at least 1")
        elif getattr(base, knob) > bound:
            raise ConfigError(
                f"{knob}={getattr(base, knob)} is above {flag} {bound}: lower the one or raise "
                "the other"
            )
        resolved[knob] = bound
    if limits.max_concurrency is not None and limits.max_concurrency < 1:
        raise ConfigError(f"--max-concurrency {limits.max_concurrency} must be at least 1")
    return resolved


class RequestError(Exception):
    """An OpenAI-style error: HTTP status, message, the offending parameter and a code."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        kind: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.kind = kind

    def body(self) -> dict[str, Any]:
        """The JSON error object, as OpenAI's API and SDKs shape it."""
        return {
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }
        }

    def response(self) -> JSONResponse:
        """The error as an HTTP response."""
        # A failed model server was already retried (max_retries): the OpenAI SDKs honour this
        # header instead of retrying the whole chain of thought.
        headers = {"x-should-retry": "false"} if self.status == 502 else None
        return JSONResponse(self.body(), status_code=self.status, headers=headers)


def as_request_error(error: Exception) -> RequestError:
    """What a client is told about an error of a run: bad input is a 400, a failing model server
    a 502, anything else a 500 whose details stay in the server's log."""
    if isinstance(error, RequestError):
        return error
    if isinstance(error, ConfigError):
        return RequestError(400, str(error), code="invalid_value")
    if isinstance(error, EndpointError):
        return RequestError(502, str(error), code="model_server_error", kind="server_error")
    log.error("unexpected error in a routed run", exc_info=error)
    return RequestError(
        500, "internal error in the router; its log has the details", kind="server_error"
    )


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


def question_of(messages: list[Any] | None) -> str:
    """The question: the text of the last user message, which must end the conversation.

    System messages and earlier turns are not sent to the models: each request routes one
    question, worded by the request's task template.
    """
    if not messages:
        raise RequestError(
            400,
            "messages is missing or empty: send the question as a user message",
            param="messages",
        )
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in MESSAGE_ROLES:
            raise RequestError(
                400,
                f"messages[{index}] must be an object whose role is one of {list(MESSAGE_ROLES)}",
                param=f"messages[{index}]",
            )
    users = [index for index, message in enumerate(messages) if message["role"] == "user"]
    if not users:
        raise RequestError(
            400, "messages has no user message: the last one is the question", param="messages"
        )
    last = users[-1]
    if last != len(messages) - 1:
        raise RequestError(
            400,
            f"messages[{last + 1}] ({messages[last + 1]['role']}) follows the last user "
            "message: GlimpRouter answers a user message and cannot continue another turn",
            param=f"messages[{last + 1}]",
        )
    text = _text_of(messages[last].get("content"), f"messages[{last}].content")
    if not text.strip():
        raise RequestError(
            400, f"messages[{last}].content is empty: give the question", param=f"messages[{last}]"
        )
    try:
        text.encode()
    except UnicodeEncodeError:  # JSON escapes can spell lone surrogates, which no model reads
        raise RequestError(
            400, f"messages[{last}].content is not valid Unicode", param=f"messages[{last}]"
        ) from None
    return text


def _text_of(content: Any, param: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list) and content:
        texts = []
        for part in content:
            if not (isinstance(part, dict) and part.get("type") == "text"):
                kind = part.get("type") if isinstance(part, dict) else None
                raise RequestError(
                    400,
                    f"{param} has a content part of type {kind!r}: only text parts are supported",
                    param=param,
                )
            if not isinstance(part.get("text"), str):
                raise RequestError(
                    400, f"{param} has a text part without a string text", param=param
                )
            texts.append(part["text"])
        return "\n".join(texts)
    raise RequestError(
        400, f"{param} must be a string or a non-empty list of text parts", param=param
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


def finish_reason(stop_reason: str | None) -> str:
    """OpenAI's finish reason: "length" when the chain was cut short (budget, step limit, full
    context) and the answer forced, else "stop"."""
    return "length" if stop_reason in CUT_SHORT else "stop"


def usage_of(result: dict[str, Any]) -> dict[str, Any]:
    """OpenAI usage summed over every request of the run, with the per-model breakdown."""
    per_model = {
        role: {
            "requests": 0,
            "prompt_tokens": 0,
            "completion_tokens": 0,
            **(result.get("usage") or {}).get(role, {}),
        }
        for role in MODEL_ROLES
    }
    prompt = sum(usage["prompt_tokens"] for usage in per_model.values())
    completion = sum(usage["completion_tokens"] for usage in per_model.values())
    steps = result.get("steps") or []
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "completion_tokens_details": {"reasoning_tokens": reasoning_tokens(steps)},
        "glimprouter": {
            **per_model,
            "steps": len(steps),
            "large_steps": sum(step["model"] == "large" for step in steps),
            "stop_reason": result.get("stop_reason"),
        },
    }


@dataclasses.dataclass(frozen=True)
class Reply:
    """The identity shared by a completion or all chunks of one stream."""

    model: str
    include_usage: bool = False
    id: str = dataclasses.field(default_factory=lambda: f"chatcmpl-{uuid.uuid4().hex}")
    created: int = dataclasses.field(default_factory=lambda: int(time.time()))

    def completion(self, result: dict[str, Any]) -> dict[str, Any]:
        """A chat.completion: the answer as content, the steps as reasoning_content."""
        message = {
            "role": "assistant",
            "content": result.get("answer") or "",
            "reasoning_content": STEP_SEPARATOR.join(
                step["text"] for step in result.get("steps") or []
            ),
        }
        return {
            **self._head("chat.completion"),
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": finish_reason(result.get("stop_reason")),
                }
            ],
            "usage": usage_of(result),
        }

    def chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        """A chat.completion.chunk; with include_usage every chunk carries usage null."""
        body = {
            **self._head("chat.completion.chunk"),
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if self.include_usage:
            body["usage"] = None
        return body

    def usage_chunk(self, result: dict[str, Any]) -> dict[str, Any]:
        """The last chunk of a stream with include_usage: no choices, the run's usage."""
        return {**self._head("chat.completion.chunk"), "choices": [], "usage": usage_of(result)}

    def _head(self, kind: str) -> dict[str, Any]:
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model}


class Load:
    """Chains of thought in flight, bounded when max_concurrency is set (the rest wait)."""

    def __init__(self, max_concurrency: int | None) -> None:
        self._semaphore = asyncio.Semaphore(max_concurrency) if max_concurrency else None
        self.running = 0
        self.waiting = 0
        self.peak_running = 0

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one place among the running chains for the duration of a run."""
        self.waiting += 1
        try:
            if self._semaphore is not None:
                await self._semaphore.acquire()
        finally:
            self.waiting -= 1
        self.running += 1
        self.peak_running = max(self.peak_running, self.running)
        try:
            yield
        finally:
            self.running -= 1
            if self._semaphore is not None:
                self._semaphore.release()


class GraphRun:
    """One chain of thought in its own task; the response reads its events from a queue.

    LangGraph's stream stays in the task that started it (its context variables belong there),
    while the response may wait on it from another task and stop it at any point. Events are the
    graph's own ({"event": "step", ...}, {"event": "answer", ...}), then {"event": "result"}.
    """

    def __init__(self, chat: ChatRequest, load: Load) -> None:
        self._events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._task = asyncio.create_task(self._produce(chat, load))

    async def _produce(self, chat: ChatRequest, load: Load) -> None:
        try:
            async with load.slot():
                output = await run_question(
                    graph,
                    {"question": chat.question, "task": chat.task},
                    chat.context,
                    run_config(chat.context),
                    on_event=self._events.put_nowait,
                )
        except Exception as error:  # handed to the reader, which answers with an error object
            self._events.put_nowait({"event": "error", "error": error})
            return
        # The end last, once the slot is free: a client that has its answer sees the load it
        # left behind.
        if output.get("error"):  # a model server failed mid-chain, after its retries
            self._events.put_nowait({"event": "error", "error": EndpointError(output["error"])})
        else:
            self._events.put_nowait({"event": "result", "output": output})

    async def next_event(self) -> dict[str, Any]:
        """The next event; an error of the run is raised here."""
        event = await self._events.get()
        if event["event"] == "error":
            raise event["error"]
        return event

    async def output(self) -> OutputState:
        """The run's output, once it has finished."""
        while (event := await self.next_event())["event"] != "result":
            pass
        return event["output"]

    def cancel(self) -> None:
        """Stop the run: its open model requests are closed, which makes vLLM abort them."""
        self._task.cancel()


class ClientGone(Exception):
    """The client disconnected while its run was going."""


async def _unless_disconnected(request: Request, work: Awaitable[Any]) -> Any:
    """Await `work` unless the client leaves first: a slow chain of thought must not keep the
    model servers busy for nobody."""
    task = asyncio.ensure_future(work)

    async def disconnected() -> None:
        # The body is read: the only message left is the disconnect (or the response's end).
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(disconnected())
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        task.cancel()  # no-op once done
    if task not in done:
        raise ClientGone
    return task.result()


async def read_json(request: Request) -> Any:
    """The request body as JSON, refusing oversized bodies and what the JSON standard forbids
    (NaN, Infinity)."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise RequestError(
                413, f"the request body is over {MAX_BODY_BYTES} bytes", code="body_too_large"
            )

    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} is not JSON")

    try:
        return json.loads(bytes(body), parse_constant=refuse)
    except (ValueError, RecursionError) as error:
        raise RequestError(
            400, f"the request body is not valid JSON: {error}", code="invalid_json"
        ) from None


def create_app(
    base_context: RouterContext,
    limits: RouterLimits | None = None,
    *,
    served_model_name: str = DEFAULT_MODEL_NAME,
    task: str = "math",
) -> Starlette:
    """The ASGI app: GET /v1/models, POST /v1/chat/completions and GET /health (load)."""
    limits = limits or RouterLimits()
    bounded = bounds(limits, base_context)
    if task not in TEMPLATES:
        raise ConfigError(f"unknown task {task!r}; valid tasks: {sorted(TEMPLATES)}")
    load = Load(limits.max_concurrency)
    started = int(time.time())

    async def list_models(request: Request) -> Response:
        model = {"id": served_model_name, "object": "model", "created": started}
        return JSONResponse({"object": "list", "data": [{**model, "owned_by": "glimprouter"}]})

    async def health(request: Request) -> Response:
        return JSONResponse(
            {
                "status": "ok",
                "running": load.running,
                "waiting": load.waiting,
                "peak_running": load.peak_running,
            }
        )

    async def chat_completions(request: Request) -> Response:
        try:
            chat = parse_chat_request(
                await read_json(request),
                base_context,
                bounded,
                served_model_name=served_model_name,
                default_task=task,
            )
        except RequestError as error:
            return error.response()
        reply = Reply(served_model_name, include_usage=chat.include_usage)
        run = GraphRun(chat, load)
        streaming = False
        try:
            if chat.stream:
                # Headers wait for the first step, so a failing model server still gets an
                # error status rather than an error inside a 200 stream.
                first = await _unless_disconnected(request, run.next_event())
                streaming = True
                return StreamingResponse(
                    _sse(reply, run, first),
                    media_type="text/event-stream",
                    headers={"Cache-Control": "no-cache"},
                )
            return JSONResponse(reply.completion(await _unless_disconnected(request, run.output())))
        except ClientGone:
            return Response(status_code=499)  # nginx's "client closed request": nobody reads it
        except Exception as error:
            return as_request_error(error).response()
        finally:
            if not streaming:
                run.cancel()

    async def http_error(request: Request, error: HTTPException) -> Response:
        body = RequestError(error.status_code, str(error.detail)).body()
        return JSONResponse(body, status_code=error.status_code, headers=error.headers)

    return Starlette(
        routes=[
            Route("/v1/models", list_models, methods=["GET"]),
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/health", health, methods=["GET"]),
        ],
        exception_handlers={HTTPException: http_error},
    )


async def _sse(reply: Reply, run: GraphRun, first: dict[str, Any]) -> AsyncIterator[str]:
    """The stream: a role chunk, each step as reasoning_content, the answer as content, the
    finish reason, then usage when asked for. The run stops when the client leaves."""

    def data(payload: dict[str, Any]) -> str:
        return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"

    try:
        yield data(reply.chunk({"role": "assistant", "content": ""}))
        event = first
        steps = 0
        while event["event"] != "result":
            if event["event"] == "step":
                separator = STEP_SEPARATOR if steps else ""
                yield data(reply.chunk({"reasoning_content": separator + event["text"]}))
                steps += 1
            elif event["event"] == "answer":
                yield data(reply.chunk({"content": event["text"]}))
            event = await run.next_event()
        output = event["output"]
        yield data(reply.chunk({}, finish_reason(output["stop_reason"])))
        if reply.include_usage:
            yield data(reply.usage_chunk(output))
    except Exception as error:  # the status is sent: the error goes in the stream, as OpenAI does
        yield data(as_request_error(error).body())
    finally:
        run.cancel()
    yield "data: [DONE]\n\n"


def serve_router(
    base_context: RouterContext,
    limits: RouterLimits | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    served_model_name: str = DEFAULT_MODEL_NAME,
    task: str = "math",
) -> None:
    """Check both model servers, then serve the endpoint until interrupted; prints one line with
    the base URL once it accepts requests."""
    app = create_app(base_context, limits, served_model_name=served_model_name, task=task)
    asyncio.run(_serve(app, base_context, host, port, served_model_name))


async def _serve(
    app: Starlette, base_context: RouterContext, host: str, port: int, served_model_name: str
) -> None:
    await check_endpoints(base_context)
    # Our own socket: a taken port is one line naming the flag, and --port 0 picks a free one.
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise ConfigError(
            f"cannot listen on {host}:{port} ({error.strerror}): choose another --port or --host"
        ) from None
    # A slow chain of thought must not hold Ctrl-C for minutes: in-flight runs get a few seconds.
    server = uvicorn.Server(uvicorn.Config(app, timeout_graceful_shutdown=5))
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started and not serving.done():
        await asyncio.sleep(0.05)
    if server.started:
        shown = f"[{host}]" if ":" in host else host
        print(
            f"serving {served_model_name!r} at http://{shown}:{sock.getsockname()[1]}/v1 "
            f"(small: {base_context.shown_url('small')}, large: {base_context.shown_url('large')})",
            flush=True,
        )
    await serving


def add_router_command(
    commands: argparse._SubParsersAction,
    add_context_flags: Callable[[argparse.ArgumentParser], None],
    context_from_args: Callable[[argparse.Namespace], RouterContext],
) -> None:
    """Register `serve-router` on the top-level parser."""
    parser = commands.add_parser(
        "serve-router",
        help="serve GlimpRouter as one model behind an OpenAI-compatible endpoint",
        description="Serve /v1/chat/completions and /v1/models: the last user message is the "
        "question, the chain of thought comes back as reasoning_content and the answer as "
        "content. Requests may set routing knobs in the body (extra_body), up to the limits "
        "below; the routing flags are the defaults.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on (0: any free)")
    parser.add_argument(
        "--served-model-name",
        default=DEFAULT_MODEL_NAME,
        help=f"model id clients ask for (default {DEFAULT_MODEL_NAME})",
    )
    parser.add_argument(
        "--task",
        default="math",
        choices=sorted(TEMPLATES),
        help="prompt family of requests that set no task (default math)",
    )
    group = parser.add_argument_group(
        "request limits (default: the server's own setting, so requests may only lower it)"
    )
    for knob, (_, flag) in LIMITED.items():
        group.add_argument(flag, type=int, metavar="N", help=f"largest {knob} a request may set")
    group.add_argument(
        "--max-concurrency",
        type=int,
        metavar="N",
        help="chains of thought run at once; more requests wait (default: no bound)",
    )
    add_context_flags(parser)
    parser.set_defaults(handler=lambda args: _serve_router_command(args, context_from_args))


def _serve_router_command(
    args: argparse.Namespace, context_from_args: Callable[[argparse.Namespace], RouterContext]
) -> int:
    limits = RouterLimits(
        **{attribute: getattr(args, attribute) for attribute, _ in LIMITED.values()},
        max_concurrency=args.max_concurrency,
    )
    try:
        serve_router(
            context_from_args(args),
            limits,
            host=args.host,
            port=args.port,
            served_model_name=args.served_model_name,
            task=args.task,
        )
    except KeyboardInterrupt:  # uvicorn re-raises Ctrl-C or SIGTERM once it has shut down: a stop
        pass
    return 0
