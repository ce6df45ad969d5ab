"""Streamed steps: a step written as the server streams it, the glimpse read from its first
token (the stream closed at once when the other model is to write the step), and a stream the
server cuts off asked again on the chain's replica."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import httpx
import openai

from glimprouter.continuation import CONTINUATION
from glimprouter.graph.context import ModelRole, RouterContext
from glimprouter.graph.state import ModelUsage, add_usage
from glimprouter.model_servers.client import (
    Completion,
    cached_tokens_of,
    chat_client,
    explained,
    on_replicas,
    one_request,
    request_params,
)
from glimprouter.model_servers.errors import (
    ReplicaDown,
    check_finish,
    no_logprobs,
    unreachable,
)
from glimprouter.scoring import TopLogprob, has_mass


@dataclass(frozen=True)
class StreamedStep:
    """A streamed step: its first token's candidates (when it glimpsed), and the step if it was
    kept."""

    first_token_top_logprobs: list[TopLogprob]
    completion: Completion | None  # None: cancelled after the first token
    prompt_tokens: int
    completion_tokens: int  # generated before the end or the cancellation
    cut_off: ModelUsage | None = None
    """What the attempts the server cut off before this one cost (None: there were none)."""
    cached_prompt_tokens: int | None = None
    """Prompt tokens the prefix cache served; None for a stream closed after its first token
    (vLLM reports the count only in a stream's final usage chunk)."""

    def usage(self, role: ModelRole) -> dict[str, ModelUsage]:
        """This request as a usage delta, whether it ran to the end or was cancelled, with the
        attempts the server cut off before it."""
        usage = one_request(
            role, self.prompt_tokens, self.completion_tokens, self.cached_prompt_tokens
        )
        return add_usage(usage, {role: self.cut_off}) if self.cut_off else usage


async def stream_step(
    context: RouterContext,
    role: ModelRole,
    messages: list[dict[str, str]],
    keep: Callable[[list[TopLogprob]], bool] | None,
    *,
    chain_id: str,
    max_tokens: int,
    temperature: float,
    top_p: float | None,
    stop: list[str],
    top_logprobs: int | None,
    on_text: Callable[[str, int], None] | None = None,
) -> StreamedStep:
    """Stream a step. To glimpse, with `top_logprobs` on: after the first token ask `keep`
    whether this model should write the step; if not, close the stream at once (vLLM aborts the
    request on disconnect). While a kept step streams, `on_text` sees its text so far and the
    tokens generated so far (not with its last chunk, the one that says how it finished). The
    request goes to chain `chain_id`'s replica, or the next one up.

    vLLM reports log-probabilities before temperature and top-p, so the first token's candidates
    are those a greedy one-token probe on the same prefix sees: the same routing decision, and
    one request (one prefill) for a kept step instead of two.
    """
    params = request_params(
        context,
        chain_id,
        max_tokens=max_tokens,
        temperature=temperature,
        top_p=top_p,
        top_logprobs=top_logprobs,
    )
    # Usage on every chunk (a vLLM option): a cancelled request still reports its prompt size.
    params["extra_body"] = {
        **CONTINUATION,
        "stream_options": {"include_usage": True, "continuous_usage_stats": True},
    }
    # A stream the server cuts off (it died mid-step) is asked again, as the client retries a
    # request that failed before its first byte; what the cut-off attempts generated still
    # counts, on whichever replica the step is finally written.
    cut_off: dict[str, ModelUsage] = {}

    async def send(replica: RouterContext) -> StreamedStep:
        nonlocal cut_off
        for attempt in range(replica.max_retries + 1):
            try:
                glimpsed = await _stream_once(replica, role, messages, keep, stop, params, on_text)
                return replace(glimpsed, cut_off=cut_off.get(role))
            except _StreamCut as cut:
                cut_off = add_usage(
                    cut_off, one_request(role, cut.prompt_tokens, cut.completion_tokens)
                )
                if attempt == replica.max_retries:
                    raise ReplicaDown(
                        f"the {role} model server at {replica.shown_url(role)} cut off "
                        f"{replica.max_retries + 1} streamed step(s) before they ended: check it "
                        "is up and its log, or raise max_retries (GLIMPROUTER_MAX_RETRIES)"
                    ) from None
        raise AssertionError("unreachable")

    return await on_replicas(context, role, chain_id, send)


class _StreamCut(Exception):
    """The stream ended before the server said how the step finished, after generating what
    its last usage counted."""

    def __init__(self, usage: dict[str, Any]) -> None:
        super().__init__()
        self.prompt_tokens = int(usage.get("input_tokens", 0))
        self.completion_tokens = int(usage.get("output_tokens", 0))


async def _stream_once(
    context: RouterContext,
    role: ModelRole,
    messages: list[dict[str, str]],
    keep: Callable[[list[TopLogprob]], bool] | None,
    stop: list[str],
    params: dict[str, Any],
    on_text: Callable[[str, int], None] | None,
) -> StreamedStep:
    chunks = chat_client(context, role).astream(messages, stop=stop, **params)
    first: list[TopLogprob] | None = None
    text: list[str] = []
    finish_reason = None
    cancelled = False
    usage: dict[str, Any] = {}
    received = False
    try:
        async for chunk in chunks:
            received = True
            usage = chunk.usage_metadata or usage
            metadata = chunk.response_metadata
            finish_reason = metadata.get("finish_reason") or finish_reason
            text.append(chunk.content if isinstance(chunk.content, str) else "")
            token_logprobs = (metadata.get("logprobs") or {}).get("content") or []
            if keep is not None and first is None and token_logprobs:
                first = token_logprobs[0].get("top_logprobs") or []
                if not has_mass(first) or not keep(first):
                    cancelled = True
                    break
            # Not with the step's end: whatever follows it would race what on_text sends.
            if on_text is not None and chunk.content and finish_reason is None:
                on_text("".join(text), int(usage.get("output_tokens") or len(text)))
    except openai.APIError as error:
        timed_out = isinstance(error, openai.APITimeoutError)
        if received and isinstance(error, openai.APIConnectionError) and not timed_out:
            raise _StreamCut(usage) from None
        raise await explained(error, context, role) from None
    except (httpx.TimeoutException, TimeoutError):
        raise timed_out(context, role) from None
    except httpx.HTTPError:
        if received:
            raise _StreamCut(usage) from None
        raise unreachable(context, role) from None
    finally:
        await chunks.aclose()
    if not cancelled and finish_reason is None:
        raise _StreamCut(usage)
    if keep is not None and (first is None or not has_mass(first)):
        raise no_logprobs(context, role)
    check_finish(finish_reason, context, role)
    prompt_tokens = int(usage.get("input_tokens", 0))
    completion_tokens = int(usage.get("output_tokens", 0))
    cached = cached_tokens_of(usage)
    return StreamedStep(
        first_token_top_logprobs=first or [],
        completion=None
        if cancelled
        else Completion(
            "".join(text),
            finish_reason,
            prompt_tokens,
            completion_tokens,
            [],
            context.shown_url(role),
            cached,
        ),
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        cached_prompt_tokens=cached,
    )
