"""How far a request may go: the server-side limits that bound the routing knobs a request sets,
checked against the server's own settings, and the bounds on load and on slow clients, each
declared once with its serve-router flag.

By default a request cannot make its chain cost more than the server's own settings would: it
may lower the budgets, pick only the server's method or the cheapest one, move a threshold or
large_rate only the way that sends fewer steps to the large model, and pick a glimpse mode or
answer model only as cheap as the server's. Each RouterLimits field widens one of these; its
serve-router flag is the field's name (--allow-methods, --min-threshold, ...).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from glimprouter.errors import ConfigError
from glimprouter.graph.context import RouterContext
from glimprouter.graph.settings import request_limits
from glimprouter.strategies import (
    STRATEGIES,
    Direction,
    Strategy,
    choices,
    costing_no_more,
    get_strategy,
)

DEFAULT_MODEL_NAME = "glimprouter"
# The longest question by default: a 50 KB one is served, bounded by max_chain_prompt_tokens.
DEFAULT_QUESTION_TOKENS = 65536


def _server_flag(
    default: Any, flag: str, least: float, flag_help: str, aliases: tuple[str, ...] = ()
) -> Any:
    """A RouterLimits field with its serve-router flag (its argparse dest is the field's name)
    and any older names of it: a count (int, at least `least`) or seconds (float, above
    `least`). A default other than None is added to the help."""
    kind = float if isinstance(default, float) else int
    metadata = {
        "flag": flag,
        "aliases": aliases,
        "type": kind,
        "metavar": "SECONDS" if kind is float else "N",
        "least": least,
        "flag_help": flag_help if default is None else f"{flag_help} (default {default:g})",
    }
    return dataclasses.field(default=default, metadata=metadata)


def _allow(knob: str, flag_help: str) -> Any:
    """A limit that lists the values of a choice knob a request may pick."""
    return dataclasses.field(default=None, metadata={"knob": knob, "help": flag_help})


def _bound(knob: str, refused: Direction) -> Any:
    """A limit past which (`refused`: "higher" above it, "lower" below it) a knob that a
    strategy reads sends more steps to the large model."""
    readers = [s.name for s in STRATEGIES.values() if s.costlier.get(knob) == refused]
    most = "highest" if refused == "higher" else "lowest"
    flag_help = f"{most} {knob} a request may set for {', '.join(readers)} (default: the server's)"
    return dataclasses.field(
        default=None, metadata={"knob": knob, "refused": refused, "help": flag_help}
    )


@dataclasses.dataclass(frozen=True, kw_only=True)
class RouterLimits:
    """The most a request may ask for, and the most the server gives one client. A knob's limit
    left at None is the server's own setting, so by default a client may lower the cost of its
    chain but not raise it."""

    max_token_budget: int | None = None
    max_step_tokens: int | None = None
    max_steps_limit: int | None = None
    max_top_k: int | None = None
    max_answer_tokens: int | None = None
    max_chain_tokens_limit: int | None = None
    max_chain_prompt_tokens_limit: int | None = None
    allow_methods: tuple[str, ...] | None = _allow(
        "method", "methods a request may pick (default: the server's own and small-only)"
    )
    allow_glimpse_modes: tuple[str, ...] | None = _allow(
        "glimpse_mode", "glimpse modes a request may pick (default: the server's own and stream)"
    )
    allow_answer_models: tuple[str, ...] | None = _allow(
        "answer_model", "models that may write a request's answer (default: the server's and small)"
    )
    min_threshold: float | None = _bound("threshold", "lower")
    max_threshold: float | None = _bound("threshold", "higher")
    max_large_rate: float | None = _bound("large_rate", "higher")
    max_question_tokens: int = _server_flag(
        DEFAULT_QUESTION_TOKENS, "--max-question-tokens", 1,
        "longest question a request may ask, in tokens counted as its UTF-8 bytes (never fewer "
        "than a byte-level tokenizer's); longer: a 400",
    )  # fmt: skip
    # One router in front of many users. vLLM batches up to 256 sequences per server (its
    # max_num_seqs) and a chain keeps one or two model requests open at a time, so 64 chains keep
    # both servers' batches full with room to spare; more only queue inside vLLM, where no one
    # is turned away and every chain slows down. 64 more wait here rather than get a 429, and
    # one key runs at most 8 so that a burst of one leaves room for 7 others at once.
    max_concurrency: int = _server_flag(
        64, "--max-concurrency", 1,
        "chains of thought run at once by the whole server (every --workers process together); "
        "more requests wait",
    )  # fmt: skip
    max_waiting: int = _server_flag(
        64, "--max-waiting", 0,
        "requests that may wait for --max-concurrency, served round-robin across API keys; "
        "beyond, a 429 with Retry-After to the newest request of the key waiting most",
    )  # fmt: skip
    max_requests_per_key: int = _server_flag(
        8, "--max-requests-per-key", 1,
        "chains one API key runs at once, streaming or not; its others wait their turn; no "
        "bound with no key set",
        aliases=("--max-streams-per-key",),
    )  # fmt: skip
    header_timeout: float = _server_flag(
        10.0, "--header-timeout", 0,
        "seconds a client has to send a request's headers, from connecting or from the previous "
        "response; then the connection is closed",
    )  # fmt: skip
    body_timeout: float = _server_flag(
        30.0, "--body-timeout", 0,
        "seconds a client has to send a request's body once its headers are in; then a 408",
    )  # fmt: skip
    send_timeout: float = _server_flag(
        30.0, "--send-timeout", 0,
        "seconds a reply may wait on a client that reads nothing; then the connection is closed "
        "and its run stopped",
    )  # fmt: skip


# Request field -> (RouterLimits attribute, CLI flag) of the knobs with a server-side bound; the
# flag's argparse dest is the attribute (--max-steps itself is the server's default max_steps).
LIMITED: dict[str, tuple[str, str]] = request_limits(RouterContext)
# The limits on what a request picks and on the knobs a strategy reads, declared above.
COST_LIMITS: tuple[dataclasses.Field, ...] = tuple(
    f for f in dataclasses.fields(RouterLimits) if "knob" in f.metadata
)

# The knobs a strategy reads: bounded only for the strategies that read them, the way each does.
STRATEGY_KNOBS = frozenset(knob for s in STRATEGIES.values() for knob in s.costlier)


def limit_flag(name: str) -> str:
    """The serve-router flag of a RouterLimits field."""
    return "--" + name.replace("_", "-")


@dataclasses.dataclass(frozen=True)
class Bound:
    """A number a knob may not pass: above it (`refused` "higher") or below it ("lower")."""

    knob: str
    limit: float
    refused: Direction
    flag: str


@dataclasses.dataclass(frozen=True)
class Bounds:
    """What a request may ask of this server, resolved against its own settings."""

    numbers: tuple[Bound, ...]
    choices: dict[str, tuple[tuple[str, ...], str]]
    """Choice knob -> (the values a request may pick, the flag that widens them)."""
    own: tuple[str, str] = ("", "")
    """The server's (method, knobs): a request moves a strategy's own knobs only the cheaper
    way from the server's values (from the knob's default under another method)."""
    question_tokens: int = DEFAULT_QUESTION_TOKENS
    """The longest question, in tokens counted as UTF-8 bytes (--max-question-tokens)."""


def default_chain_tokens(limits: RouterLimits, base: RouterContext) -> int:
    """The server's max_chain_tokens when it sets none: room for every reasoning token a request
    may keep, as many again in glimpses, cut-off streams and rejected drafts, one token per step
    for a probe or a judge call, and the answer, all at the most a request may set."""

    def most(knob: str) -> int:
        limit = getattr(limits, LIMITED[knob][0])
        return getattr(base, knob) if limit is None else limit

    tokens = 2 * most("token_budget") + most("max_steps") + most("answer_max_tokens")
    ceiling = limits.max_chain_tokens_limit
    if ceiling is None:
        return tokens
    if ceiling <= base.answer_max_tokens:
        raise ConfigError(
            f"--max-chain-tokens-limit {ceiling} leaves no room for reasoning: it must exceed "
            f"answer_max_tokens={base.answer_max_tokens}, which a chain keeps for its answer"
        )
    return min(tokens, ceiling)


def bounds(limits: RouterLimits, base: RouterContext) -> Bounds:
    """What a request may ask, or a ConfigError when a limit is malformed or the server's own
    settings break one. `base` has its max_chain_tokens set (create_app sees to it)."""
    numbers = []
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
        numbers.append(Bound(knob, bound, "higher", flag))
    choices = {}
    for limit in COST_LIMITS:
        value = getattr(limits, limit.name)
        if "refused" in limit.metadata:
            numbers.append(_strategy_bound(limit, value, base))
        else:
            choices[limit.metadata["knob"]] = (_choices(limit, value, base), limit_flag(limit.name))
    for field in server_flags():
        value, least = getattr(limits, field.name), field.metadata["least"]
        flag = field.metadata["flag"]
        if value is None:
            continue
        if field.metadata["type"] is int and value < least:
            raise ConfigError(f"{flag} {value} must be at least {least}")
        if field.metadata["type"] is float and value <= least:
            raise ConfigError(f"{flag} {value} must be above {least}")
    return Bounds(tuple(numbers), choices, (base.method, base.knobs), limits.max_question_tokens)


def server_flags() -> list[dataclasses.Field]:
    """The RouterLimits fields that are serve-router flags of their own (not a knob's bound)."""
    return [f for f in dataclasses.fields(RouterLimits) if "flag" in f.metadata]


def _choices(limit: dataclasses.Field, given: Any, base: RouterContext) -> tuple[str, ...]:
    """The values of a choice knob a request may pick: those `given`, checked, or by default
    those that cost no more than the server's own."""
    knob, flag = limit.metadata["knob"], limit_flag(limit.name)
    own = getattr(base, knob)
    if given is None:
        return costing_no_more(knob, own)
    if knob == "method":  # the operator's: an import path among them is imported
        for method in given:
            if ":" in method:
                get_strategy(method)
    unknown = sorted(set(given) - set(choices(knob)))
    if unknown:
        raise ConfigError(f"{flag}: unknown {knob} {unknown}; valid: {list(choices(knob))}")
    if own not in given:
        raise ConfigError(
            f"{knob}={own!r} is not in {flag} {list(given)}: add it there or change "
            f"--{knob.replace('_', '-')}"
        )
    return tuple(given)


def _strategy_bound(limit: dataclasses.Field, given: float | None, base: RouterContext) -> Bound:
    """The bound of a knob a strategy reads: `given`, or by default the server's own value,
    which must be within it when the server's own method reads the knob that way."""
    knob, refused = limit.metadata["knob"], limit.metadata["refused"]
    own = getattr(base, knob)
    bound = Bound(knob, own if given is None else given, refused, limit_flag(limit.name))
    if get_strategy(base.method).costlier.get(knob) == refused and _past(own, bound):
        raise ConfigError(
            f"{knob}={own} is {_side(bound)} {bound.flag} {bound.limit}: move the one or the other"
        )
    return bound


def _past(value: float, bound: Bound) -> bool:
    return value > bound.limit if bound.refused == "higher" else value < bound.limit


def _side(bound: Bound) -> str:
    return "above" if bound.refused == "higher" else "below"


@dataclasses.dataclass(frozen=True)
class Refusal:
    """Why a run's settings cost more than the server allows: the knob, the message, the code."""

    knob: str
    message: str
    code: str


def refusal(context: RouterContext, allowed: Bounds, names: Mapping[str, str]) -> Refusal | None:
    """The first knob of `context` past what the server allows, its message naming the body
    field (`names`: knob -> the field that set it) and the flag that would allow it; None when
    the run is within the server's bounds."""
    for knob, (values, flag) in allowed.choices.items():
        value = getattr(context, knob)
        if value not in values:
            return Refusal(
                knob,
                f"{names.get(knob, knob)}={value!r} costs more than this server allows: it "
                f"allows {list(values)} ({flag})",
                "value_not_allowed",
            )
    strategy = get_strategy(context.method)
    if refused := _own_knob_refusal(context, strategy, allowed, names):
        return refused
    for bound in allowed.numbers:
        if bound.knob in STRATEGY_KNOBS and strategy.costlier.get(bound.knob) != bound.refused:
            continue  # not read by this method, or moved the cheaper way
        value = getattr(context, bound.knob)
        if _past(value, bound):
            reason = f" for {context.method}" if bound.knob in STRATEGY_KNOBS else ""
            return Refusal(
                bound.knob,
                f"{names.get(bound.knob, bound.knob)}={value} is {_side(bound)} this server's "
                f"limit of {bound.limit}{reason} ({bound.flag})",
                f"value_{_side(bound)}_limit",
            )
    return None


def _own_knob_refusal(
    context: RouterContext, strategy: Strategy, allowed: Bounds, names: Mapping[str, str]
) -> Refusal | None:
    """The first of the strategy's own knobs (`Knobs`) that the run moves past the server's
    value the way that costs more."""
    method, knobs = allowed.own
    run, server = (
        strategy.knobs_of(k) for k in (context.knobs, knobs if method == context.method else "")
    )
    for name, way in strategy.own_costlier().items():
        bound = Bound(name, getattr(server, name), way, "--knob")
        if _past(getattr(run, name), bound):
            return Refusal(
                "knobs",
                f"{names.get('knobs', 'knobs')} {name}={getattr(run, name)} is {_side(bound)} "
                f"this server's {bound.limit} for {context.method} (--knob)",
                f"value_{_side(bound)}_limit",
            )
    return None
