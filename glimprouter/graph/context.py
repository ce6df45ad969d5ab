"""Run settings of the routing graph: one dataclass, every knob documented and env-settable.

Each field the caller does not set falls back to the environment variable ``GLIMPROUTER_<FIELD>``
(upper case), so a notebook, the CLI, LangGraph Studio and a deployment share one source of
configuration. Studio shows the field descriptions. What else a field declares (its flag, whether
a request may set it, its eval identity) is its `setting(...)` metadata: glimprouter.graph.settings.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from typing import Any, get_type_hints

from glimprouter.errors import ConfigError
from glimprouter.graph.settings import (
    DEFAULT_CHAIN_PROMPT_TOKENS,
    ENV_PREFIX,
    ReplicaAffinity,
    check_values,
    join_urls,
    parse_env,
    redact_url,
    setting,
    split_urls,
    unescaped,
)
from glimprouter.prompts import STEP_SEPARATOR
from glimprouter.strategies import MODEL_ROLES, STRATEGIES, GlimpseMode, ModelRole


@dataclass(kw_only=True)
class RouterContext:
    """Everything one routed run needs: the two endpoints, the routing rule, and the budgets."""

    small_base_url: str = field(
        default="http://127.0.0.1:8001/v1",
        metadata=setting(
            "OpenAI-compatible base URL of the small model's vLLM server, or of each of its "
            "replicas: a list, or the URLs separated by commas. A chain stays on one replica.",
            flag="--small-url",
            flag_help="small model's base URL, e.g. http://127.0.0.1:8001/v1; several "
            "replicas: their URLs separated by commas",
        ),
    )
    small_model: str = field(
        default="small",
        metadata=setting(
            "Served model name of the small model.",
            flag_help="small model's served name",
            identity=True,
        ),
    )
    small_api_key: str = field(
        default="EMPTY",
        repr=False,  # kept out of logs and error messages
        metadata=setting(
            "API key of the small model's server.",
            flag_help=(
                "small model server's API key (shows in ps: prefer --small-api-key-file or "
                "GLIMPROUTER_SMALL_API_KEY)"
            ),
        ),
    )
    large_base_url: str = field(
        default="http://127.0.0.1:8002/v1",
        metadata=setting(
            "OpenAI-compatible base URL of the large model's vLLM server, or of each of its "
            "replicas: a list, or the URLs separated by commas. A chain stays on one replica.",
            flag="--large-url",
            flag_help="large model's base URL, e.g. http://127.0.0.1:8002/v1; several "
            "replicas: their URLs separated by commas",
        ),
    )
    large_model: str = field(
        default="large",
        metadata=setting(
            "Served model name of the large model.",
            flag_help="large model's served name",
            identity=True,
        ),
    )
    large_api_key: str = field(
        default="EMPTY",
        repr=False,  # kept out of logs and error messages
        metadata=setting(
            "API key of the large model's server.",
            flag_help=(
                "large model server's API key (shows in ps: prefer --large-api-key-file or "
                "GLIMPROUTER_LARGE_API_KEY)"
            ),
        ),
    )
    method: str = field(
        default="glimprouter",
        metadata=setting(
            f"Routing strategy: {', '.join(STRATEGIES)}, or a Strategy subclass's import path "
            "package.module:ClassName.",
            flag_help="routing strategy (default glimprouter; see the README)",
            request=True,
            identity=True,
        ),
    )
    threshold: float = field(
        default=1.0,
        metadata=setting(
            "The strategy's cut. glimprouter: glimpse entropy (nats) at or above which the large "
            "model writes the step (0: always large). step-entropy / step-ppl: draft score at or "
            "above which the large model rewrites. specreason: judge score (0-9) below which it "
            "rewrites.",
            flag_help="glimpse entropy at or above which the large model writes",
            request=True,
            identity=True,
        ),
    )
    knobs: str = field(
        default="",
        metadata=setting(
            "The method's own knobs (its Strategy's Knobs), as name=value separated by commas; "
            "unset knobs keep their defaults.",
            flag="--knob",
            flag_help="the method's own knobs, e.g. --knob lower=0.6 (name=value,...)",
            request=True,
            identity=True,
        ),
    )
    large_rate: float = field(
        default=0.5,
        metadata=setting(
            "random method: probability that a step goes to the large model.",
            flag_help="random method: probability of a large step",
            request=True,
            identity=True,
        ),
    )
    glimpse_mode: GlimpseMode = field(
        default="stream",
        metadata=setting(
            "stream: the small model starts the step with logprobs on and is cut off after the "
            "first token if the large model must write it (one request per small step); probe: "
            "a separate one-token request before every step, as the reference code does.",
            flag_help="stream (default: one request per small step) or probe",
            request=True,
            identity=True,
        ),
    )
    top_k: int = field(
        default=20,
        metadata=setting(
            "How many top log-probabilities of the glimpsed token the entropy is computed over "
            "(at most the server's --max-logprobs).",
            flag_help="top log-probabilities the glimpse entropy is computed over",
            request=True,
            limit=("max_top_k", "--max-top-k"),
            identity=True,
        ),
    )
    step_max_tokens: int = field(
        default=512,
        metadata=setting(
            "Most tokens one reasoning step may take.",
            flag_help="most tokens of one step",
            request=True,
            limit=("max_step_tokens", "--max-step-tokens"),
            identity=True,
        ),
    )
    step_separator: str = field(
        default=STEP_SEPARATOR,
        metadata=setting(
            "What ends a reasoning step: the paper's blank line (\\n\\n), or a single line "
            "break (\\n) for instruct models that write one idea a line and rarely a blank "
            "line (the local default pair's Qwen2.5-Coder). Backslash escapes are read.",
            flag_help="what ends a step: '\\n\\n' (default, a blank line) or '\\n'",
            identity=True,
        ),
    )
    token_budget: int = field(
        default=8192,
        metadata=setting(
            "Most reasoning tokens over all steps; never overshot.",
            flag_help="most reasoning tokens over all steps",
            request=True,
            limit=("max_token_budget", "--max-token-budget"),
            identity=True,
        ),
    )
    max_steps: int = field(
        default=512,
        metadata=setting(
            "Most reasoning steps before the answer is forced.",
            flag_help="most reasoning steps",
            request=True,
            limit=("max_steps_limit", "--max-steps-limit"),
            identity=True,
        ),
    )
    temperature: float = field(
        default=0.6,
        metadata=setting(
            "Sampling temperature of the reasoning steps and answer.",
            flag_help="sampling temperature of steps and answer",
            request=True,
            identity=True,
        ),
    )
    top_p: float = field(
        default=0.95,
        metadata=setting(
            "Nucleus sampling top-p of the reasoning steps and answer.",
            flag_help="nucleus top-p of steps and answer",
            request=True,
            identity=True,
        ),
    )
    answer_model: ModelRole = field(
        default="large",
        metadata=setting(
            "Which model writes the final answer: small or large.",
            flag_help="model that writes the final answer: small or large",
            request=True,
            identity=True,
        ),
    )
    answer_max_tokens: int = field(
        default=2048,
        metadata=setting(
            "Most tokens of the final answer after </think>.",
            flag_help="most tokens of the final answer",
            request=True,
            limit=("max_answer_tokens", "--max-answer-tokens"),
            identity=True,
        ),
    )
    max_chain_tokens: int | None = field(
        default=None,
        metadata=setting(
            "Most tokens the models may generate for one chain, counting every request: kept "
            "steps, glimpses and probes, streams cut off, rejected drafts, judge calls and the "
            "answer (whose answer_max_tokens are kept aside). None: no bound beyond the others.",
            flag_help="most tokens generated for one chain, over every request (default: no "
            "bound; serve-router's: twice the token budget plus a token per step and the answer)",
            request=True,
            limit=("max_chain_tokens_limit", "--max-chain-tokens-limit"),
            identity=True,
        ),
    )
    max_chain_prompt_tokens: int = field(
        default=DEFAULT_CHAIN_PROMPT_TOKENS,
        metadata=setting(
            "Most prompt tokens one chain may send, over every request: every glimpse, probe, "
            "step, draft and judge call re-sends the question and the chain so far. The chain "
            "stops (stop_reason max_chain_prompt_tokens) before its next step could pass it, "
            "room kept for the answer. Warming prefills (warm_prefix_cache) are not counted.",
            flag_help="most prompt tokens sent for one chain, over every request (default "
            f"{DEFAULT_CHAIN_PROMPT_TOKENS:,})",
            request=True,
            limit=("max_chain_prompt_tokens_limit", "--max-chain-prompt-tokens-limit"),
            identity=True,
        ),
    )
    warm_prefix_cache: bool = field(
        default=True,
        metadata=setting(
            "While one model writes, give the idle model's server the chain so far to prefill "
            "(one-token requests whose replies are thrown away), so that its prompt is already "
            "cached when it takes over. Off the critical path; no routing decision depends on "
            "it. Turn it off where the servers are busy with other chains (one GPU shared by "
            "many): there the extra prefills queue ahead of their steps.",
            flag_help="warm the idle model's prefix cache: on (default) or off",
        ),
    )
    request_timeout: float = field(
        default=300.0,
        metadata=setting(
            "Seconds to wait for one model request.",
            flag_help="seconds to wait for one model request",
        ),
    )
    max_retries: int = field(
        default=2,
        metadata=setting(
            "Retries of a failed model request (connection errors, 5xx).",
            flag_help="retries of a failed request",
        ),
    )
    replica_affinity: ReplicaAffinity = field(
        default="chain",
        metadata=setting(
            "How requests spread over a role's replicas. chain: every request of a chain goes "
            "to the same replica (a stable hash of the chain id), which holds its prefix in "
            "cache; request: each request goes to the next replica in turn (no affinity, for "
            "comparison).",
            flag_help="chain (default: a chain stays on one replica) or request (round robin)",
        ),
    )
    affinity_header: str = field(
        default="x-user-id",
        metadata=setting(
            "HTTP header that carries an opaque hash of the chain id (never a client's thread "
            "id) on every model request, so that a load balancer in front of several replicas "
            "keeps a chain on one of them (vLLM "
            "production-stack: --routing-logic session --session-key x-user-id). Empty: none.",
            flag_help="header carrying a hash of the chain id to a load balancer (default "
            "x-user-id, production-stack's session key); empty for none",
        ),
    )
    replica_cooldown: float = field(
        default=30.0,
        metadata=setting(
            "Seconds a replica that failed (unreachable, 5xx after the retries, a stream cut "
            "off) is set aside while chains continue on the role's other replicas.",
            flag_help="seconds a failed replica is set aside",
        ),
    )
    seed: int | None = field(
        default=None,
        metadata=setting(
            "Sampling seed sent with every request, for repeatable runs.",
            flag_help="sampling seed sent with every request",
            request=True,
            identity=True,
        ),
    )

    def __new__(cls, *args: Any, **given: Any) -> RouterContext:
        # Note which fields the caller set (subclasses too): the environment fills only the
        # others, so an explicit value equal to the default still wins.
        context = super().__new__(cls)
        context.__dict__["_given"] = frozenset(given)
        return context

    def __post_init__(self) -> None:
        hints = get_type_hints(type(self))
        given = self.__dict__.pop("_given", ())
        foreign = {f"{role}_api_key" for role in MODEL_ROLES if self._url_is_callers(role, given)}
        for f in fields(self):
            env_name = ENV_PREFIX + f.name.upper()
            if f.name not in given and f.name not in foreign and env_name in os.environ:
                setattr(self, f.name, parse_env(env_name, os.environ[env_name], hints[f.name]))
        for role in MODEL_ROLES:
            name = f"{role}_base_url"
            setattr(self, name, join_urls(getattr(self, name)))
        # A flag or a variable carries the separator written with escapes: --step-separator '\n'
        self.step_separator = unescaped(self.step_separator)
        check_values(self)

    def _url_is_callers(self, role: ModelRole, given: frozenset[str]) -> bool:
        """Whether the caller (a run context, a flag) points `role` at a URL other than the
        environment's (or the default): the environment's API key then stays home, so a key
        travels only to the URL it was configured with."""
        name = f"{role}_base_url"
        if name not in given:
            return False
        default = next(f.default for f in fields(self) if f.name == name)
        configured = os.environ.get(ENV_PREFIX + name.upper(), default)
        return _comparable(getattr(self, name)) != _comparable(configured)

    def shown_url(self, role: ModelRole) -> str:
        """The base URL(s) of `role` as messages, banners and results show them (no password)."""
        return ",".join(redact_url(url) for url in self.replica_urls(role))

    def replica_urls(self, role: ModelRole) -> tuple[str, ...]:
        """The base URL of each replica of `role`, in the order given."""
        return split_urls(getattr(self, f"{role}_base_url"))

    def on_replica(self, role: ModelRole, url: str) -> RouterContext:
        """This context with `role` pointed at its one replica `url` (what a request uses)."""
        if getattr(self, f"{role}_base_url") == url:
            return self
        return replace(self, **{f"{role}_base_url": url})

    def endpoint(self, role: ModelRole) -> tuple[str, str, str]:
        """(base URL, model name, API key) of the small or the large model, on a context that
        points `role` at one replica (`on_replica`)."""
        urls = self.replica_urls(role)
        if len(urls) != 1:
            raise ValueError(f"{role} has {len(urls)} replicas: pick one with on_replica")
        return (urls[0], getattr(self, f"{role}_model"), getattr(self, f"{role}_api_key"))

    @property
    def recursion_limit(self) -> int:
        """LangGraph super-steps this run may take."""
        return self.recursion_limit_for(self.max_steps)

    @staticmethod
    def recursion_limit_for(max_steps: int) -> int:
        """Up to six super-steps per reasoning step (glimpse, decide, draft, review, step, check),
        plus the answer."""
        return 6 * max_steps + 8


def _comparable(urls: str | list[str]) -> tuple[str, ...]:
    return tuple(url.rstrip("/") for url in split_urls(join_urls(urls)))


def resolve_context(context: RouterContext | dict[str, Any] | None) -> RouterContext:
    """The run context of a graph run: defaults (and env) when none was passed."""
    if context is None:
        return RouterContext()
    if isinstance(context, dict):
        known = {f.name for f in fields(RouterContext)}
        unknown = sorted(set(context) - known)
        if unknown:
            raise ConfigError(f"unknown context field(s) {unknown}; valid fields: {sorted(known)}")
        return RouterContext(**context)
    return context
