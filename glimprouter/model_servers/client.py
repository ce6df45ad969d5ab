"""The requests to the model servers: ChatOpenAI clients bound to vLLM endpoints, a request
sent to the chain's replica (or the next one up), one whole reply (`complete`) and a prefill.

Clients are built once per endpoint and reused across steps, runs and threads. Every request
continues an assistant prefix (vLLM's continue_final_message), and every server error is turned
into one line that names the setting to fix (`explained`). A streamed step is `streaming`'s.
"""

from __future__ import annotations

import asyncio
import re
import uuid
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import httpx
import openai
from langchain_core.messages import AIMessage
from langchain_openai import ChatOpenAI
from langgraph.constants import TAG_NOSTREAM

from glimprouter.continuation import CONTINUATION
from glimprouter.errors import EndpointError
from glimprouter.graph.context import ModelRole, RouterContext
from glimprouter.graph.state import ModelUsage
from glimprouter.model_servers.errors import (
    ReplicaDown,
    bad_key,
    check_finish,
    every_replica_down,
    no_logprobs,
    timed_out,
    unknown_model,
    unreachable,
)
from glimprouter.model_servers.replicas import ReplicaPicker, session_key
from glimprouter.model_servers.startup import (
    CANARY_QUESTION,
    EndpointReport,
    check_endpoints,
    served_models,
)
from glimprouter.scoring import TopLogprob, has_mass

# The start-up check lives in its own module; callers reach it, like the requests, here.
__all__ = [
    "CANARY_QUESTION",
    "CONTINUATION",
    "Completion",
    "ContextOverflow",
    "EndpointReport",
    "chat_client",
    "check_endpoints",
    "complete",
    "new_chain_id",
    "one_request",
    "prefill",
]

_CONTEXT_OVERFLOW = re.compile(r"maximum context length|context length|too long", re.IGNORECASE)


class ContextOverflow(Exception):
    """The server refused a request because prompt plus output exceed the model's context."""


def one_request(
    role: ModelRole,
    prompt_tokens: int,
    completion_tokens: int,
    cached_prompt_tokens: int | None = None,
) -> dict[str, ModelUsage]:
    """A usage delta of one request, for the state's per-model totals; `cached_prompt_tokens`
    (and `counted_prompt_tokens`, the prompt they are counted over) only where the server said
    how many prompt tokens its prefix cache served."""
    usage: ModelUsage = {
        "requests": 1,
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
    }
    if cached_prompt_tokens is not None:
        usage["cached_prompt_tokens"] = cached_prompt_tokens
        usage["counted_prompt_tokens"] = prompt_tokens
    return {role: usage}


def cached_tokens_of(usage_metadata: Any) -> int | None:
    """The prompt tokens the server's prefix cache served, from a reply's usage (vLLM's
    usage.prompt_tokens_details.cached_tokens, which langchain-openai maps to
    input_token_details.cache_read); None where the server does not report it (started without
    --enable-prompt-tokens-details, or a stream closed before its final usage chunk)."""
    details = (usage_metadata or {}).get("input_token_details") or {}
    cached = details.get("cache_read")
    return None if cached is None else int(cached)


@dataclass(frozen=True)
class Completion:
    """What one request produced."""

    text: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    token_logprobs: list[dict[str, Any]]
    """Per generated token, when logprobs were asked: {token, logprob, bytes, top_logprobs}."""
    replica: str
    """The base URL (without password) of the replica that wrote it."""
    cached_prompt_tokens: int | None = None
    """Prompt tokens the server's prefix cache served (None: the server did not say)."""

    @property
    def first_token_top_logprobs(self) -> list[TopLogprob]:
        """The top-k candidates of the first generated token."""
        return self.token_logprobs[0]["top_logprobs"]

    def usage(self, role: ModelRole) -> dict[str, ModelUsage]:
        """This request as a usage delta for the state's per-model totals."""
        return one_request(
            role, self.prompt_tokens, self.completion_tokens, self.cached_prompt_tokens
        )


# ChatOpenAI's async HTTP client belongs to the event loop it first ran on, so clients are shared
# within a loop (every step, run and concurrent question) and never across loops (a notebook's
# successive asyncio.run calls).
_clients_by_loop: weakref.WeakKeyDictionary[Any, dict[tuple[Any, ...], ChatOpenAI]] = (
    weakref.WeakKeyDictionary()
)
_clients_outside_loops: dict[tuple[Any, ...], ChatOpenAI] = {}


def chat_client(context: RouterContext, role: ModelRole) -> ChatOpenAI:
    """The shared ChatOpenAI client of the small or large endpoint of `context`."""
    base_url, model, api_key = context.endpoint(role)
    key = (base_url, model, api_key, context.request_timeout, context.max_retries)
    try:
        clients = _clients_by_loop.setdefault(asyncio.get_running_loop(), {})
    except RuntimeError:
        clients = _clients_outside_loops
    if key not in clients:
        # Our own HTTP client: langchain-openai's default one is shared process-wide, across loops.
        clients[key] = ChatOpenAI(
            http_async_client=httpx.AsyncClient(limits=httpx.Limits(max_connections=256)),
            base_url=base_url,
            model=model,
            api_key=api_key,
            timeout=context.request_timeout,
            # No second clock on streams: langchain-openai's per-chunk limit (120 s by default)
            # cut off requests queued behind many others and costs a task per token; the HTTP
            # read timeout (request_timeout) already bounds every gap, as vLLM sends no
            # keep-alive chunks.
            stream_chunk_timeout=None,
            max_retries=context.max_retries,
            use_responses_api=False,
            stream_usage=True,
        )
    return clients[key]


def new_chain_id() -> str:
    """A fresh chain id: what pins a chain to its replicas and, hashed, the affinity header."""
    return uuid.uuid4().hex


# One per process: a replica that failed is set aside for every chain this process runs.
_replicas = ReplicaPicker()

Result = TypeVar("Result")


async def on_replicas(
    context: RouterContext,
    role: ModelRole,
    chain_id: str,
    send: Callable[[RouterContext], Awaitable[Result]],
) -> Result:
    """`send` the request to the chain's replica of `role`; when that replica is down (after the
    client's retries), set it aside for replica_cooldown seconds and send the same request to the
    chain's next replica. The request is a whole step (or glimpse, or answer): nothing of a failed
    attempt joins the chain, so the chain goes on from the step it was on."""
    failures: list[ReplicaDown] = []
    for url in _replicas.order(context.replica_urls(role), chain_id, context.replica_affinity):
        try:
            result = await send(context.on_replica(role, url))
        except ReplicaDown as failure:
            _replicas.set_aside(url, context.replica_cooldown)
            failures.append(failure)
            continue
        _replicas.restore(url)
        return result
    raise every_replica_down(role, failures)


def request_params(
    context: RouterContext,
    chain_id: str,
    *,
    max_tokens: int,
    temperature: float,
    top_p: float | None,
    top_logprobs: int | None,
) -> dict[str, Any]:
    """The parameters of a request of chain `chain_id`: sampling, the prefix continued, the
    seed, logprobs when asked, and the chain's affinity header."""
    params: dict[str, Any] = {
        "max_tokens": max_tokens,
        "temperature": temperature,
        "extra_body": CONTINUATION,
    }
    if top_p is not None:
        params["top_p"] = top_p
    if context.seed is not None:
        params["seed"] = context.seed
    if top_logprobs is not None:
        params.update(logprobs=True, top_logprobs=top_logprobs)
    if context.affinity_header:
        params["extra_headers"] = {context.affinity_header: session_key(chain_id)}
    return params


async def complete(
    context: RouterContext,
    role: ModelRole,
    messages: list[dict[str, str]],
    *,
    chain_id: str,
    max_tokens: int,
    temperature: float,
    top_p: float | None = None,
    stop: list[str] | None = None,
    top_logprobs: int | None = None,
    stream: bool = True,
) -> Completion:
    """Continue the assistant prefix in `messages` with one model, on the replica of chain
    `chain_id` (or the next one up); `stream=False` keeps the request out of LangGraph's token
    stream (the glimpse)."""
    params = request_params(
        context,
        chain_id,
        max_tokens=max_tokens,
        temperature=temperature,
        top_p=top_p,
        top_logprobs=top_logprobs,
    )
    config = None if stream else {"tags": [TAG_NOSTREAM]}

    async def send(replica: RouterContext) -> Completion:
        try:
            message = await chat_client(replica, role).ainvoke(
                messages, config=config, stop=stop, **params
            )
        except openai.APIError as error:
            raise await explained(error, replica, role) from None
        except TimeoutError:
            raise timed_out(replica, role) from None
        return _completion(message, top_logprobs is not None, replica, role)

    return await on_replicas(context, role, chain_id, send)


async def prefill(
    context: RouterContext, role: ModelRole, messages: list[dict[str, str]], *, chain_id: str
) -> None:
    """Have the server of chain `chain_id`'s replica of `role` prefill `messages` into its
    prefix cache: a greedy one-token request without a seed (it samples nothing another request
    would), tried once (a later request prefills anyway), kept out of LangGraph's token stream;
    its reply is thrown away."""
    await complete(
        replace(context, max_retries=0, seed=None),
        role,
        messages,
        chain_id=chain_id,
        max_tokens=1,
        temperature=0.0,
        stream=False,
    )


def _completion(
    message: AIMessage, want_logprobs: bool, context: RouterContext, role: ModelRole
) -> Completion:
    usage = message.usage_metadata or {}
    metadata = message.response_metadata
    token_logprobs = (metadata.get("logprobs") or {}).get("content") or []
    if want_logprobs and not (
        token_logprobs and has_mass(token_logprobs[0].get("top_logprobs") or [])
    ):
        raise no_logprobs(context, role)
    if metadata.get("finish_reason") is None:
        # Only a reply streamed under a LangGraph token stream and cut off lacks one.
        raise ReplicaDown(
            f"the {role} model server at {context.shown_url(role)} cut off a reply before it "
            "ended: check it is up and its log"
        )
    check_finish(metadata.get("finish_reason"), context, role)
    return Completion(
        text=message.content if isinstance(message.content, str) else str(message.content),
        finish_reason=metadata.get("finish_reason"),
        prompt_tokens=int(usage.get("input_tokens", 0)),
        completion_tokens=int(usage.get("output_tokens", 0)),
        token_logprobs=token_logprobs,
        replica=context.shown_url(role),
        cached_prompt_tokens=cached_tokens_of(usage),
    )


async def explained(error: openai.APIError, context: RouterContext, role: ModelRole) -> Exception:
    """One actionable line for a failed request (or ContextOverflow, which ends the chain)."""
    base_url = context.shown_url(role)
    detail = _error_detail(error)
    if isinstance(error, openai.APITimeoutError):
        return timed_out(context, role)
    if isinstance(error, openai.APIConnectionError):
        return unreachable(context, role)
    if isinstance(error, openai.AuthenticationError):
        return bad_key(context, role)
    if isinstance(error, openai.NotFoundError):
        return unknown_model(context, role, await served_models(context, role))
    if isinstance(error, openai.InternalServerError):  # 5xx, after the client's retries
        return ReplicaDown(f"the {role} model server at {base_url} failed: {detail}")
    # A refused request arrives as a 400, or inside a stream as a plain APIError: read the text.
    if isinstance(error, openai.BadRequestError) or type(error) is openai.APIError:
        if "logprobs" in detail.lower():
            return EndpointError(
                f"the {role} model server at {base_url} allows fewer top logprobs than "
                f"top_k={context.top_k} ({detail}): lower --top-k / GLIMPROUTER_TOP_K or "
                f"restart vLLM with --max-logprobs {context.top_k}"
            )
        if _CONTEXT_OVERFLOW.search(detail):
            return ContextOverflow(detail)
    return EndpointError(f"the {role} model server at {base_url} failed: {detail}")


def _error_detail(error: openai.APIError) -> str:
    body = error.body
    if isinstance(body, dict):
        message = body.get("message") or (body.get("error") or {}).get("message")
        if message:
            return " ".join(str(message).split())
    return " ".join(str(error.message).split())
