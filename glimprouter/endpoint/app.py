"""The ASGI app: its routes (/v1/models, /v1/chat/completions, /health, /openapi.json), the
request body's JSON and the server-sent event stream."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import AsyncIterator, Callable, Collection
from pathlib import Path
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from glimprouter.endpoint.admission import RemoteGate
from glimprouter.endpoint.chains import Chains
from glimprouter.endpoint.errors import RequestError, as_request_error
from glimprouter.endpoint.hosts import RequireHost
from glimprouter.endpoint.keys import OPEN_PATHS, ApiKeys, RequireKey
from glimprouter.endpoint.limits import (
    DEFAULT_MODEL_NAME,
    RouterLimits,
    bounds,
    default_chain_tokens,
)
from glimprouter.endpoint.load import Gate, Load, LocalGate, Scheduler
from glimprouter.endpoint.metrics import CountRequests, RouterMetrics
from glimprouter.endpoint.openapi import openapi_document
from glimprouter.endpoint.protocol import Health, ModelCard, ModelList, request_model
from glimprouter.endpoint.requests import parse_chat_request
from glimprouter.endpoint.responses import Reply, finish_reason
from glimprouter.endpoint.runs import ClientGone, GraphRun, unless_disconnected
from glimprouter.errors import ConfigError
from glimprouter.graph.context import RouterContext
from glimprouter.graph.threads import DEFAULT_MAX_THREAD_CHECKPOINTS
from glimprouter.prompts import TEMPLATES

# Questions are text: a bigger body is a mistake or abuse, refused before it is parsed.
MAX_BODY_BYTES = 1 << 20


async def read_json(request: Request, timeout_s: float) -> Any:
    """The request body as JSON, refusing another media type (a browser's cross-site "simple"
    POST is text/plain, a form, or a Blob with none), a body that takes over `timeout_s` to
    arrive, oversized bodies and what the JSON standard forbids (NaN, Infinity)."""
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type != "application/json":
        raise RequestError(
            415,
            f"the request body must be JSON, sent as Content-Type: application/json (not "
            f"{media_type or 'none'})",
            code="unsupported_media_type",
        )
    body = bytearray()
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.stream():
                body += chunk
                if len(body) > MAX_BODY_BYTES:
                    raise RequestError(
                        413,
                        f"the request body is over {MAX_BODY_BYTES} bytes",
                        code="body_too_large",
                    )
    except TimeoutError:
        raise RequestError(
            408,
            f"the request body did not arrive within {timeout_s:g} s (serve-router --body-timeout)",
            code="request_timeout",
            # The rest of the body may never come: the connection cannot carry another request.
            headers={"Connection": "close"},
        ) from None

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
    api_keys: ApiKeys | None = None,
    open_metrics: bool = False,
    checkpoint_db: str | Path | None = None,
    thread_ttl: float | None = None,
    max_thread_checkpoints: int | None = DEFAULT_MAX_THREAD_CHECKPOINTS,
    hosts: Collection[str] | None = None,
    scheduler_socket: str | None = None,
) -> Starlette:
    """The ASGI app: GET /v1/models, POST /v1/chat/completions, GET /health (load) and GET
    /openapi.json (the wire format, from the protocol's models). With `api_keys`, /v1 needs one
    of them, and so does /metrics unless `open_metrics`. Chains run when `limits` give them a
    place: from a Scheduler of this app's own, or with `scheduler_socket` from the serve-router
    process that owns the one all its workers share (endpoint/admission.py). With
    `checkpoint_db`, a request may carry a thread_id whose chain is kept there, as its API key's
    (at most `max_thread_checkpoints` checkpoints each; deleted once not touched for
    `thread_ttl` seconds, if set). With `hosts`, a request naming another Host is refused.
    `limits` bound what a request may ask (by default no more than `base_context` costs), and
    every chain its max_chain_tokens (`default_chain_tokens` when `base_context` sets none)."""
    limits = limits or RouterLimits()
    if base_context.max_chain_tokens is None:  # a server bounds what every chain may cost
        chain_tokens = default_chain_tokens(limits, base_context)
        base_context = dataclasses.replace(base_context, max_chain_tokens=chain_tokens)
    bounded = bounds(limits, base_context)
    if task not in TEMPLATES:
        raise ConfigError(f"unknown task {task!r}; valid tasks: {sorted(TEMPLATES)}")
    api_keys = api_keys or ApiKeys()
    metrics = RouterMetrics()
    gate: Gate = RemoteGate(scheduler_socket) if scheduler_socket else LocalGate(scheduler(limits))
    load = Load(gate, on_change=metrics.record_load)
    chains = Chains(
        checkpoint_db, thread_ttl=thread_ttl, max_thread_checkpoints=max_thread_checkpoints
    )
    started = int(time.time())

    document = openapi_document(request_model(type(base_context)))

    async def list_models(request: Request) -> Response:
        models = ModelList(data=[ModelCard(id=served_model_name, created=started)])
        return JSONResponse(models.model_dump(mode="json"))

    async def health(request: Request) -> Response:
        state = Health(running=load.running, waiting=load.waiting, peak_running=load.peak_running)
        return JSONResponse(state.model_dump(mode="json"))

    async def exposition(request: Request) -> Response:
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    async def openapi(request: Request) -> Response:
        return JSONResponse(document)

    async def chat_completions(request: Request) -> Response:
        try:
            chat = parse_chat_request(
                await read_json(request, limits.body_timeout),
                base_context,
                bounded,
                served_model_name=served_model_name,
                default_task=task,
            )
            chat = dataclasses.replace(chat, api_key=getattr(request.state, "api_key", None))
        except RequestError as error:
            return error.response()
        reply = Reply(served_model_name, include_usage=chat.include_usage,
                      step_separator=chat.context.step_separator)  # fmt: skip
        run = GraphRun(chat, chains, load, metrics)

        streaming = False
        try:
            if chat.stream:
                # Headers wait for the first step, so a failing model server still gets an
                # error status rather than an error inside a 200 stream.
                first = await unless_disconnected(request, run.next_event())
                streaming = True
                return _Stream(_sse(reply, run, first), run.cancel)
            return JSONResponse(reply.completion(await unless_disconnected(request, run.output())))
        except ClientGone:
            return Response(status_code=499)  # nginx's "client closed request": nobody reads it
        except Exception as error:
            return as_request_error(error, reply.step_separator).response()
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
            Route("/openapi.json", openapi, methods=["GET"]),
            Route("/metrics", exposition, methods=["GET"]),
        ],
        exception_handlers={HTTPException: http_error},
        lifespan=lambda app: chains.opened(),
        # Outermost first: every refusal below is counted.
        middleware=[
            Middleware(CountRequests, metrics=metrics),
            Middleware(RequireHost, hosts=None if hosts is None else frozenset(hosts)),
            Middleware(
                RequireKey,
                keys=api_keys,
                open_paths=OPEN_PATHS | ({"/metrics"} if open_metrics else set()),
            ),
        ],
    )


def scheduler(limits: RouterLimits) -> Scheduler:
    """The Scheduler of `limits`' bounds on load."""
    return Scheduler(limits.max_concurrency, limits.max_waiting, limits.max_requests_per_key)


class _Stream(StreamingResponse):
    """A server-sent event stream that calls `end` once it is over, however it ends (finished,
    the client gone, or cut by the server), even if it never started."""

    def __init__(self, events: AsyncIterator[str], end: Callable[[], None]) -> None:
        super().__init__(
            events, media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
        )
        self._end = end

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._end()


async def _sse(reply: Reply, run: GraphRun, first: dict[str, Any]) -> AsyncIterator[str]:
    """The stream: a role chunk, each step as reasoning_content, the answer as content, the
    finish reason, then usage when asked for."""

    def data(payload: dict[str, Any]) -> str:
        return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"

    try:
        yield data(reply.chunk({"role": "assistant", "content": ""}))
        event = first
        steps = 0
        while event["event"] != "result":
            if event["event"] == "step":
                separator = reply.step_separator if steps else ""
                yield data(reply.chunk({"reasoning_content": separator + event["text"]}))
                steps += 1
            elif event["event"] == "answer":
                yield data(reply.chunk({"content": event["text"]}))
            event = await run.next_event()
        output = event["output"]
        yield data(reply.chunk({}, finish_reason(output["stop_reason"], output.get("answer_cut"))))
        if reply.include_usage:
            yield data(reply.usage_chunk(output))
    except Exception as error:  # the status is sent: the error goes in the stream, as OpenAI does
        yield data(as_request_error(error, reply.step_separator).body())
    yield "data: [DONE]\n\n"
