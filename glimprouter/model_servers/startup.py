"""The start-up check: before any work, whether each endpoint is up, serves its model, and
continues the router's prefixes with usable logprobs (the canary)."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import httpx

from glimprouter.continuation import (
    CONTINUATION,
    PROBE_PREFIXES,
    judge_rendering,
    required_context_length,
)
from glimprouter.errors import EndpointError
from glimprouter.graph.context import MODEL_ROLES, ModelRole, RouterContext
from glimprouter.model_servers.errors import (
    ReplicaDown,
    bad_key,
    every_replica_down,
    timed_out,
    unknown_model,
    unreachable,
    url_setting,
)
from glimprouter.prompts import continuation_messages

# The logger of the model-server client as a whole (the package), not of this module: users who
# configure "glimprouter.model_servers" see the start-up check's warnings with the requests'.
logger = logging.getLogger("glimprouter.model_servers")


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
    except httpx.HTTPError as error:
        raise replica_lost(context, role, error) from None
    if response.status_code in (401, 403):
        raise bad_key(context, role)
    _refuse_server_error(response, context, role, "/models")
    if response.status_code != 200:
        raise EndpointError(
            f"{context.shown_url(role)}/models answered HTTP {response.status_code}: is "
            f"{url_setting(role)} the base URL of an OpenAI-compatible server (ending in /v1)?"
        )
    try:
        entries = response.json().get("data", [])
    except ValueError:
        entries = None
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise EndpointError(
            f"{context.shown_url(role)}/models did not answer an OpenAI model list: is "
            f"{url_setting(role)} "
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


async def check_endpoints(base: RouterContext) -> EndpointReport:
    """Fail fast, before any work, when an endpoint (every replica of a role) is down, or any
    replica that answers does not serve its model or shows a misconfigured server (`canary`);
    else say which model each role's replicas serve, and warn of what will hurt, a replica that
    failed anywhere in the check among others included (logged, one line each, on stderr when
    logging is not configured)."""
    served: dict[ModelRole, str] = {}
    warnings = []
    down: dict[ModelRole, list[ReplicaDown]] = {role: [] for role in MODEL_ROLES}
    replicas = [(role, url) for role in MODEL_ROLES for url in base.replica_urls(role)]
    for role, url in replicas:
        context = base.on_replica(role, url)
        try:
            entry = await _checked_replica(context, role)
        except ReplicaDown as failure:
            down[role].append(failure)
            continue
        root = str(entry.get("root") or entry["id"])
        if served.setdefault(role, root) != root:
            raise EndpointError(
                f"the {role} model server at {context.shown_url(role)} serves {root}, another "
                f"{role} replica serves {served[role]}: give {url_setting(role)} replicas of one "
                "model"
            )
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
    for role, failures in down.items():
        # A replica down at the start (a rolling restart, a node lost) is one the run's failover
        # sets aside at its first request; a role none of whose replicas answers stops the run.
        if len(failures) == len(base.replica_urls(role)):
            raise every_replica_down(role, failures)
        for failure in failures:
            warnings.append(f"{failure}; chains go to the other {role} replicas meanwhile")
            logger.warning(warnings[-1])
    return EndpointReport(served, warnings)


async def _checked_replica(context: RouterContext, role: ModelRole) -> dict[str, Any]:
    """The /models entry of the replica's model, once it passed the canary. A replica that
    fails on the way (no connection, a reset, a timeout, a 5xx: a rolling restart or a node lost
    mid-check) raises ReplicaDown, as at a run's first request; one that answers and shows a
    misconfigured server raises EndpointError."""
    entries = await _served_entries(context, role)
    model = context.endpoint(role)[1]
    entry = next((e for e in entries if e.get("id") == model), None)
    if entry is None:
        raise unknown_model(context, role, [e.get("id") for e in entries])
    await canary(context, role)
    return entry


def replica_lost(context: RouterContext, role: ModelRole, error: httpx.HTTPError) -> ReplicaDown:
    """The replica's failure the start-up check met: it timed out, refused the connection, or
    broke it off mid-request."""
    if isinstance(error, httpx.TimeoutException):
        return timed_out(context, role)
    if isinstance(error, httpx.ConnectError):
        return unreachable(context, role)
    return ReplicaDown(
        f"the {role} model server at {context.shown_url(role)} broke off the start-up check "
        f"({type(error).__name__}: {error}): check it is up and its log"
    )


def _refuse_server_error(
    response: httpx.Response, context: RouterContext, role: ModelRole, what: str
) -> None:
    """A 5xx is this replica failing (another of the role may not), not a misconfiguration."""
    if response.status_code >= 500:
        detail = " ".join(response.text.split())[:200]
        raise ReplicaDown(
            f"the {role} model server at {context.shown_url(role)} failed the start-up check's "
            f"{what} (HTTP {response.status_code}: {detail}): check its log"
        )


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
                rendered = await _rendered_prompt(http, context, role, prefix)
                renderings.append((prefix, rendered))
    except httpx.HTTPError as error:
        raise replica_lost(context, role, error) from None
    _refuse_server_error(reply, context, role, "one-token request")
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
                "template (glimprouter/vllm_launcher/templates/)"
            )
        if behaviour == "strips":
            raise EndpointError(
                f"{where} cuts the continued text up to </think> in its chat template, so the "
                "answer request fails: restart it with glimprouter serve, or vLLM's "
                "--chat-template with a verbatim template (glimprouter/vllm_launcher/templates/)"
            )


async def _rendered_prompt(
    http: httpx.AsyncClient, context: RouterContext, role: ModelRole, prefix: str
) -> str | None | bool:
    """The prompt vLLM renders to continue `prefix` (its /tokenize and /detokenize); None when
    the template made it refuse, False when the server has no such endpoint."""
    base_url, model, _ = context.endpoint(role)
    root = base_url.rstrip("/").removesuffix("/v1")
    request = {
        "model": model,
        "messages": continuation_messages(CANARY_QUESTION, prefix),
        "add_generation_prompt": False,
        "continue_final_message": True,
    }
    tokenized = await http.post(root + "/tokenize", json=request)
    _refuse_server_error(tokenized, context, role, "/tokenize")
    if tokenized.status_code == 400 and "final message" in tokenized.text:
        return None  # transformers: the template deleted part of the final message
    tokens = _json_field(tokenized, "tokens")
    if not isinstance(tokens, list):
        return False
    detokenized = await http.post(root + "/detokenize", json={"model": model, "tokens": tokens})
    _refuse_server_error(detokenized, context, role, "/detokenize")
    prompt = _json_field(detokenized, "prompt")
    return prompt if isinstance(prompt, str) else False


def _json_field(response: httpx.Response, name: str) -> Any:
    """`name` of a successful JSON object reply, else None."""
    try:
        body = response.json() if response.status_code == 200 else None
    except ValueError:
        return None
    return body.get(name) if isinstance(body, dict) else None
