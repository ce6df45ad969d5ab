"""The one place that talks to the model servers: ChatOpenAI clients bound to vLLM endpoints.

Clients are built once per endpoint and reused across steps, runs and threads. Every request
continues an assistant prefix (vLLM's continue_final_message), and every server error is turned
into one line that names the setting to fix.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import openai
from langchain_core.messages import AIMessage
from langchain_openai import ChatOpenAI
from langgraph.constants import TAG_NOSTREAM

from glimprouter.errors import EndpointError
from glimprouter.graph.context import MODEL_ROLES, ModelRole, RouterContext
from glimprouter.graph.state import ModelUsage
from glimprouter.prompts import continuation_messages
from glimprouter.scoring import TopLogprob, has_mass
from glimprouter.serving.chat_templates import PROBE_PREFIXES, judge_rendering
from glimprouter.serving.placement import required_context_length

# vLLM continues the final assistant message verbatim only with both flags (the generation
# prompt defaults to on and may not be combined with continuation). The stop string is kept in
# the output so a separator stop can be told apart from end-of-sequence.
CONTINUATION = {
    "continue_final_message": True,
    "add_generation_prompt": False,
    "include_stop_str_in_output": True,
}

logger = logging.getLogger(__name__)

_CONTEXT_OVERFLOW = re.compile(r"maximum context length|context length|too long", re.IGNORECASE)


class ContextOverflow(Exception):
    """The server refused a request because prompt plus output exceed the model's context."""


def one_request(
    role: ModelRole, prompt_tokens: int, completion_tokens: int
) -> dict[str, ModelUsage]:
    """A usage delta of one request, for the state's per-model totals."""
    return {
        role: {
            "requests": 1,
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
        }
    }


@dataclass(frozen=True)
class Completion:
    """What one request produced."""

    text: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    token_logprobs: list[dict[str, Any]]
    """Per generated token, when logprobs were asked: {token, logprob, bytes, top_logprobs}."""

    @property
    def first_token_top_logprobs(self) -> list[TopLogprob]:
        """The top-k candidates of the first generated token."""
        return self.token_logprobs[0]["top_logprobs"]

    def usage(self, role: ModelRole) -> dict[str, ModelUsage]:
        """This request as a usage delta for the state's per-model totals."""
        return one_request(role, self.prompt_tokens, self.completion_tokens)


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


def _request_params(
    context: RouterContext,
    *,
    max_tokens: int,
    temperature: float,
    top_p: float | None,
    top_logprobs: int | None,
) -> dict[str, Any]:
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
    return params


async def complete(
    context: RouterContext,
    role: ModelRole,
    messages: list[dict[str, str]],
    *,
    max_tokens: int,
    temperature: float,
    top_p: float | None = None,
    stop: list[str] | None = None,
    top_logprobs: int | None = None,
    stream: bool = True,
) -> Completion:
    """Continue the assistant prefix in `messages` with one model; `stream=False` keeps the
    request out of LangGraph's token stream (the glimpse)."""
    params = _request_params(
        context,
        max_tokens=max_tokens,
        temperature=temperature,
        top_p=top_p,
        top_logprobs=top_logprobs,
    )
    config = None if stream else {"tags": [TAG_NOSTREAM]}
    try:
        message = await chat_client(context, role).ainvoke(
            messages, config=config, stop=stop, **params
        )
    except openai.APIError as error:
        raise await _explain(error, context, role) from None
    except TimeoutError:
        raise _timed_out(context, role) from None
    return _completion(message, top_logprobs is not None, context, role)


@dataclass(frozen=True)
class GlimpsedStep:
    """A step streamed with logprobs: the first token's candidates, and the step if it was kept."""

    first_token_top_logprobs: list[TopLogprob]
    completion: Completion | None  # None: cancelled after the first token
    prompt_tokens: int
    completion_tokens: int  # generated before the end or the cancellation

    def usage(self, role: ModelRole) -> dict[str, ModelUsage]:
        """This request as a usage delta, whether it ran to the end or was cancelled."""
        return one_request(role, self.prompt_tokens, self.completion_tokens)


async def stream_with_glimpse(
    context: RouterContext,
    role: ModelRole,
    messages: list[dict[str, str]],
    keep: Callable[[list[TopLogprob]], bool],
    *,
    max_tokens: int,
    temperature: float,
    top_p: float | None,
    stop: list[str],
    top_logprobs: int,
) -> GlimpsedStep:
    """Stream a step with logprobs on; after the first token ask `keep` whether this model should
    write the step. If not, close the stream at once (vLLM aborts the request on disconnect).

    vLLM reports log-probabilities before temperature and top-p, so the first token's candidates
    are those a greedy one-token probe on the same prefix sees: the same routing decision, and
    one request (one prefill) for a kept step instead of two.
    """
    params = _request_params(
        context,
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
    # request that failed before its first byte.
    for attempt in range(context.max_retries + 1):
        try:
            return await _stream_once(context, role, messages, keep, stop, params)
        except _StreamCut:
            if attempt == context.max_retries:
                raise EndpointError(
                    f"the {role} model server at {context.shown_url(role)} cut off "
                    f"{context.max_retries + 1} streamed step(s) before they ended: check it is "
                    "up and its log, or raise max_retries (GLIMPROUTER_MAX_RETRIES)"
                ) from None
    raise AssertionError("unreachable")


class _StreamCut(Exception):
    """The stream ended before the server said how the step finished."""


async def _stream_once(
    context: RouterContext,
    role: ModelRole,
    messages: list[dict[str, str]],
    keep: Callable[[list[TopLogprob]], bool],
    stop: list[str],
    params: dict[str, Any],
) -> GlimpsedStep:
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
            if first is None and token_logprobs:
                first = token_logprobs[0].get("top_logprobs") or []
                if not has_mass(first) or not keep(first):
                    cancelled = True
                    break
    except openai.APIError as error:
        timed_out = isinstance(error, openai.APITimeoutError)
        if received and isinstance(error, openai.APIConnectionError) and not timed_out:
            raise _StreamCut from None
        raise await _explain(error, context, role) from None
    except (httpx.TimeoutException, TimeoutError):
        raise _timed_out(context, role) from None
    except httpx.HTTPError:
        if received:
            raise _StreamCut from None
        raise _unreachable(context, role) from None
    finally:
        await chunks.aclose()
    if not cancelled and finish_reason is None:
        raise _StreamCut
    if first is None or not has_mass(first):
        raise _no_logprobs(context, role)
    _check_finish(finish_reason, context, role)
    prompt_tokens = int(usage.get("input_tokens", 0))
    completion_tokens = int(usage.get("output_tokens", 0))
    return GlimpsedStep(
        first_token_top_logprobs=first,
        completion=None
        if cancelled
        else Completion("".join(text), finish_reason, prompt_tokens, completion_tokens, []),
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
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
        raise _no_logprobs(context, role)
    if metadata.get("finish_reason") is None:
        # Only a reply streamed under a LangGraph token stream and cut off lacks one.
        raise EndpointError(
            f"the {role} model server at {context.shown_url(role)} cut off a reply before it "
            "ended: check it is up and its log"
        )
    _check_finish(metadata.get("finish_reason"), context, role)
    return Completion(
        text=message.content if isinstance(message.content, str) else str(message.content),
        finish_reason=metadata.get("finish_reason"),
        prompt_tokens=int(usage.get("input_tokens", 0)),
        completion_tokens=int(usage.get("output_tokens", 0)),
        token_logprobs=token_logprobs,
    )


async def _explain(error: openai.APIError, context: RouterContext, role: ModelRole) -> Exception:
    """One actionable line for a failed request (or ContextOverflow, which ends the chain)."""
    base_url = context.shown_url(role)
    detail = _error_detail(error)
    if isinstance(error, openai.APITimeoutError):
        return _timed_out(context, role)
    if isinstance(error, openai.APIConnectionError):
        return _unreachable(context, role)
    if isinstance(error, openai.AuthenticationError):
        return _bad_key(context, role)
    if isinstance(error, openai.NotFoundError):
        return _unknown_model(context, role, await served_models(context, role))
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


async def served_models(context: RouterContext, role: ModelRole) -> list[str]:
    """Model names the server of `role` lists at /models."""
    return [entry.get("id") for entry in await _served_entries(context, role)]


async def _served_entries(context: RouterContext, role: ModelRole) -> list[dict[str, Any]]:
    """The entries the server of `role` lists at /models (vLLM's give the model's `root`)."""
    base_url, _, api_key = context.endpoint(role)
    try:
        async with httpx.AsyncClient(timeout=min(context.request_timeout, 10.0)) as http:
            response = await http.get(
                base_url.rstrip("/") + "/models", headers={"Authorization": f"Bearer {api_key}"}
            )
    except httpx.HTTPError:
        raise _unreachable(context, role) from None
    if response.status_code in (401, 403):
        raise _bad_key(context, role)
    if response.status_code != 200:
        raise EndpointError(
            f"{context.shown_url(role)}/models answered HTTP {response.status_code}: is "
            f"{_url_setting(role)} the base URL of an OpenAI-compatible server (ending in /v1)?"
        )
    try:
        entries = response.json().get("data", [])
    except ValueError:
        entries = None
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise EndpointError(
            f"{context.shown_url(role)}/models did not answer an OpenAI model list: is "
            f"{_url_setting(role)} "
            "the base URL of an OpenAI-compatible server (ending in /v1)?"
        )
    return entries


@dataclass(frozen=True)
class EndpointReport:
    """What the start-up check learned of the two servers."""

    served: dict[ModelRole, str]
    """The model each role's server serves: the `root` it reports (vLLM: the weights' path or
    hub id, whatever the served name), or the served name where it reports none."""
    warnings: list[str]
    """One line each, also logged: e.g. a context shorter than the router's longest request."""


async def check_endpoints(context: RouterContext) -> EndpointReport:
    """Fail fast, before any work, when an endpoint is down, does not serve its model, or fails
    the start-up canary (`canary`); else say which model each serves, and warn of what will
    hurt (logged, one line each, on stderr when logging is not configured)."""
    served: dict[ModelRole, str] = {}
    warnings = []
    for role in MODEL_ROLES:
        entries = await _served_entries(context, role)
        model = context.endpoint(role)[1]
        entry = next((e for e in entries if e.get("id") == model), None)
        if entry is None:
            raise _unknown_model(context, role, [e.get("id") for e in entries])
        served[role] = str(entry.get("root") or model)
        await canary(context, role)
        needed = required_context_length(context.token_budget, context.answer_max_tokens)
        length = entry.get("max_model_len")  # vLLM lists it; other servers may not
        if isinstance(length, int) and length < needed:
            warnings.append(
                f"the {role} model server at {context.shown_url(role)} serves a context of "
                f"{length} tokens, fewer than the {needed} the router may ask (prompt, "
                f"token_budget {context.token_budget}, answer_max_tokens "
                f"{context.answer_max_tokens}): late steps and the answer will be cut; restart it "
                f"with --max-model-len {needed} or lower the budget"
            )
            logger.warning(warnings[-1])
    return EndpointReport(served, warnings)


# A question no eval asks: a fake or a proxy can tell the canary's requests from a run's.
CANARY_QUESTION = "GlimpRouter start-up check: what is 2 + 2?"
_CANARY_TOP_K = 2


async def canary(context: RouterContext, role: ModelRole) -> None:
    """Refuse, with one line each, a server that would break the method without an error:

    - a reasoning parser (`--reasoning-parser`) moves the continued thinking out of `content`,
      so every step comes back empty;
    - processed logprobs (`--logprobs-mode processed_*`) are those left after top-k / top-p, so
      with a generation config such as Qwen3's the candidates are cut and the entropy collapses;
    - a chat template that adds an (empty) think block around the continued text, or cuts it
      up to `</think>` (checked through vLLM's /tokenize, where the server has one).

    One one-token request (sampled with top-k 2: processed logprobs then show at most two
    candidates) and, on vLLM, two renderings of a prompt.
    """
    base_url, model, api_key = context.endpoint(role)
    headers = {"Authorization": f"Bearer {api_key}"}
    root = base_url.rstrip("/").removesuffix("/v1")
    probe = {
        "model": model,
        "messages": continuation_messages(CANARY_QUESTION, PROBE_PREFIXES[0]),
        **CONTINUATION,
        "max_tokens": 1,
        "temperature": 1.0,
        "top_k": _CANARY_TOP_K,
        "logprobs": True,
        "top_logprobs": context.top_k,
    }
    where = f"the {role} model server at {context.shown_url(role)}"
    try:
        async with httpx.AsyncClient(timeout=context.request_timeout, headers=headers) as http:
            reply = await http.post(base_url.rstrip("/") + "/chat/completions", json=probe)
            renderings = []
            for prefix in PROBE_PREFIXES:
                rendered = await _rendered_prompt(http, root, model, prefix)
                renderings.append((prefix, rendered))
    except httpx.HTTPError:
        raise _unreachable(context, role) from None
    choices = _json_field(reply, "choices")
    if not isinstance(choices, list) or not choices:
        detail = " ".join(reply.text.split())[:300]
        if "logprobs" in detail.lower():
            raise EndpointError(
                f"{where} allows fewer top logprobs than top_k={context.top_k} ({detail}): lower "
                f"--top-k / GLIMPROUTER_TOP_K or restart vLLM with --max-logprobs {context.top_k}"
            )
        raise EndpointError(
            f"{where} failed a one-token request (HTTP {reply.status_code}: {detail}): check "
            "its log"
        )
    choice = choices[0]
    message = choice.get("message") or {}
    if not message.get("content") and (
        message.get("reasoning") or message.get("reasoning_content")
    ):
        raise EndpointError(
            f"{where} moves the model's text into a reasoning field, so every step would come "
            "back empty: restart it without --reasoning-parser"
        )
    top = ((choice.get("logprobs") or {}).get("content") or [{}])[0].get("top_logprobs") or []
    # vLLM writes a -inf log-probability as -9999.0.
    alive = [
        entry
        for entry in top
        if math.isfinite(entry.get("logprob", -math.inf)) and entry["logprob"] > -9999.0
    ]
    if len(top) > _CANARY_TOP_K and len(alive) <= _CANARY_TOP_K:
        raise EndpointError(
            f"{where} returns processed logprobs (cut by top-k / top-p), so the glimpse entropy "
            "collapses: restart it with --logprobs-mode raw_logprobs (vLLM's default)"
        )
    for prefix, rendered in renderings:
        if rendered is False:  # no /tokenize: not vLLM, nothing to check
            continue
        behaviour = judge_rendering(prefix, rendered)
        if behaviour == "wraps":
            raise EndpointError(
                f"{where} wraps the continued thinking in a think block of its chat template: "
                "restart it with glimprouter serve, or vLLM's --chat-template with a verbatim "
                "template (glimprouter/serving/templates/)"
            )
        if behaviour == "strips":
            raise EndpointError(
                f"{where} cuts the continued text up to </think> in its chat template, so the "
                "answer request fails: restart it with glimprouter serve, or vLLM's "
                "--chat-template with a verbatim template (glimprouter/serving/templates/)"
            )


async def _rendered_prompt(
    http: httpx.AsyncClient, root: str, model: str, prefix: str
) -> str | None | bool:
    """The prompt vLLM renders to continue `prefix` (its /tokenize and /detokenize); None when
    the template made it refuse, False when the server has no such endpoint."""
    request = {
        "model": model,
        "messages": continuation_messages(CANARY_QUESTION, prefix),
        "add_generation_prompt": False,
        "continue_final_message": True,
    }
    tokenized = await http.post(root + "/tokenize", json=request)
    if tokenized.status_code == 400 and "final message" in tokenized.text:
        return None  # transformers: the template deleted part of the final message
    tokens = _json_field(tokenized, "tokens")
    if not isinstance(tokens, list):
        return False
    detokenized = await http.post(root + "/detokenize", json={"model": model, "tokens": tokens})
    prompt = _json_field(detokenized, "prompt")
    return prompt if isinstance(prompt, str) else False


def _json_field(response: httpx.Response, name: str) -> Any:
    """`name` of a successful JSON object reply, else None."""
    try:
        body = response.json() if response.status_code == 200 else None
    except ValueError:
        return None
    return body.get(name) if isinstance(body, dict) else None


def _url_setting(role: ModelRole) -> str:
    return f"--{role}-url / GLIMPROUTER_{role.upper()}_BASE_URL"


def _timed_out(context: RouterContext, role: ModelRole) -> EndpointError:
    return EndpointError(
        f"the {role} model server at {context.shown_url(role)} did not answer within "
        f"{context.request_timeout:g} s: check it is up, or raise request_timeout "
        "(GLIMPROUTER_REQUEST_TIMEOUT)"
    )


def _no_logprobs(context: RouterContext, role: ModelRole) -> EndpointError:
    return EndpointError(
        f"the {role} model server at {context.shown_url(role)} returned no usable "
        f"logprobs: point {_url_setting(role)} at a vLLM (or other) server that returns "
        "top_logprobs"
    )


# Finish reasons of a request the server gave up on: its text is not a step.
_FAILED_FINISH = ("abort", "error")


def _check_finish(finish_reason: str | None, context: RouterContext, role: ModelRole) -> None:
    if finish_reason in _FAILED_FINISH:
        raise EndpointError(
            f"the {role} model server at {context.shown_url(role)} gave up on a request "
            f"(finish_reason {finish_reason!r}): check the server's log"
        )


def _unreachable(context: RouterContext, role: ModelRole) -> EndpointError:
    return EndpointError(
        f"cannot reach the {role} model server at {context.shown_url(role)}: start it "
        f"(glimprouter serve) or fix {_url_setting(role)}"
    )


def _bad_key(context: RouterContext, role: ModelRole) -> EndpointError:
    return EndpointError(
        f"the {role} model server at {context.shown_url(role)} refused the API key: set "
        f"--{role}-api-key / GLIMPROUTER_{role.upper()}_API_KEY"
    )


def _unknown_model(context: RouterContext, role: ModelRole, served: list[str]) -> EndpointError:
    model = context.endpoint(role)[1]
    return EndpointError(
        f"the {role} model server at {context.shown_url(role)} does not serve {model!r}; it serves "
        f"{served}: set --{role}-model / GLIMPROUTER_{role.upper()}_MODEL"
    )
