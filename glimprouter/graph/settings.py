"""What a RouterContext field is besides its value: the `setting(...)` metadata that declares its
surfaces (its command-line flag, whether a request to serve-router may set it and what bounds it,
whether an eval's identity includes it), the tables the CLI, the endpoint and the evals derive
from those declarations, how a setting is read from the environment or a key file and shown, and
the bounds of each setting's value (`check_values`).

The derivations take the context class (RouterContext or a subclass) as their argument, and the
check a context, so that this module sits below glimprouter.graph.context, which declares its
fields with `setting`.
"""

from __future__ import annotations

import re
import types
from dataclasses import Field, fields
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints
from urllib.parse import urlsplit, urlunsplit

from glimprouter.errors import ConfigError
from glimprouter.strategies import GLIMPSE_MODES, MODEL_ROLES, get_strategy

ENV_PREFIX = "GLIMPROUTER_"
MAX_STEPS_LIMIT = 8192
# The default max_chain_prompt_tokens: a 50 KB question (some 13K tokens) re-sent with every
# request of a long chain made 27M prompt tokens; this stops such a chain after a few dozen steps
# while an ordinary chain (a short question, token_budget 8192 in steps of ~100 tokens, some
# 0.7M) runs to its end.
DEFAULT_CHAIN_PROMPT_TOKENS = 1_000_000
# OpenAI's range of temperature; beyond it sampling is noise (and 1e308 overflows a server).
MAX_TEMPERATURE = 2.0

# An HTTP header name: RFC 9110's token characters.
_HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]*")

ReplicaAffinity = Literal["chain", "request"]
REPLICA_AFFINITIES: tuple[ReplicaAffinity, ...] = ("chain", "request")


def setting(
    description: str,
    *,
    flag_help: str,
    flag: str | None = None,
    request: bool = False,
    limit: tuple[str, str] | None = None,
    identity: bool = False,
) -> dict[str, Any]:
    """The one declaration of a RouterContext field's surfaces, as its dataclass metadata.

    `description` is what Studio and docs/settings.md show; `flag_help` the command-line flag's
    help, and `flag` its name when not --field-name. `request`: a request to serve-router may set
    it; `limit` (RouterLimits attribute, serve-router flag): the server-side bound of what a
    request sets. `identity`: part of what an eval's results directory is pinned to.
    """
    return {
        "description": description,
        "flag": flag,
        "flag_help": flag_help,
        "request": request,
        "limit": limit,
        "identity": identity,
    }


def flag_of(setting_field: Field) -> str:
    """The command-line flag of a RouterContext field."""
    return setting_field.metadata.get("flag") or "--" + setting_field.name.replace("_", "-")


def cli_flags(context_type: type) -> list[tuple[str, str, Any, str]]:
    """(flag, field, value parser, help) of every setting that has a flag."""
    return [
        (
            flag_of(f),
            f.name,
            _flag_parser(_value_type(context_type, f.name)),
            f.metadata["flag_help"],
        )
        for f in fields(context_type)
        if "flag_help" in f.metadata
    ]


TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")


def on_off(raw: str) -> bool:
    """A yes/no setting written as text (a flag, an environment variable): bool("false") is
    True, so the words are read instead."""
    word = raw.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ValueError(f"{raw!r} is not one of {', '.join(TRUE_WORDS + FALSE_WORDS)}")


def _flag_parser(kind: Any) -> Any:
    return on_off if kind is bool else kind


def request_knobs(context_type: type) -> dict[str, type]:
    """The settings a request to serve-router may set, with the type each takes."""
    return {
        f.name: _value_type(context_type, f.name)
        for f in fields(context_type)
        if f.metadata.get("request")
    }


def request_limits(context_type: type) -> dict[str, tuple[str, str]]:
    """Setting -> (RouterLimits attribute, serve-router flag) of the knobs a server bounds."""
    return {f.name: f.metadata["limit"] for f in fields(context_type) if f.metadata.get("limit")}


def identity_fields(context_type: type) -> tuple[str, ...]:
    """The settings an eval's results directory is pinned to."""
    return tuple(f.name for f in fields(context_type) if f.metadata.get("identity"))


def _value_type(context_type: type, name: str) -> type:
    """The type a flag or a request gives the field: the annotation without None, and the
    value type of a Literal."""
    annotation = get_type_hints(context_type)[name]
    if is_optional(annotation):
        annotation = next(a for a in get_args(annotation) if a is not type(None))
    if get_origin(annotation) is Literal:
        return type(get_args(annotation)[0])
    return annotation


def read_key_file(path: Path, flag: str) -> str:
    """The API key in the first line of `path`."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"cannot read the API key in {path} ({error}): check {flag}") from None
    if not lines or not lines[0].strip():
        raise ConfigError(f"{path} holds no API key on its first line: check {flag}")
    return lines[0].strip()


def join_urls(urls: str | list[str] | tuple[str, ...]) -> str:
    """One base-URL setting as it is kept: a list (or a comma-separated text) as one text of
    the URLs separated by commas, without the spaces around them."""
    items = urls.split(",") if isinstance(urls, str) else [str(url) for url in urls]
    return ",".join(item.strip() for item in items)


def split_urls(urls: str) -> tuple[str, ...]:
    """The URLs of a base-URL setting as `join_urls` keeps it (empty items kept, to refuse)."""
    return tuple(urls.split(",")) if urls else ()


def redact_url(url: str) -> str:
    """`url` without the password of its user:password@ part, if any."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def parse_env(env_name: str, raw: str, annotation: Any) -> Any:
    """The value of the environment variable `env_name` (text `raw`) for a field `annotation`."""
    kinds = (
        [a for a in get_args(annotation) if a is not type(None)]
        if is_optional(annotation)
        else [annotation]
    )
    kind = kinds[0]
    if is_optional(annotation) and raw.strip().lower() in ("", "none"):
        return None
    if get_origin(kind) is Literal:
        return raw
    try:
        return _flag_parser(kind)(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"{env_name}={raw!r} is not a valid {kind.__name__}") from None


def is_optional(annotation: Any) -> bool:
    return get_origin(annotation) in (Union, types.UnionType) and type(None) in get_args(annotation)


STEP_SEPARATORS = ("\n\n", "\n")


def unescaped(text: str) -> str:
    """`text` with backslash escapes (\\n) read, as a shell passes them on."""
    return text.encode("latin-1", "backslashreplace").decode("unicode_escape")


def check_values(context: Any) -> None:
    """Refuse a context (RouterContext or a subclass) whose settings are out of bounds, naming
    the setting and where to set it."""

    def bad(name: str, why: str) -> ConfigError:
        value = getattr(context, name)
        if name in url_fields:
            value = join_urls([redact_url(url) for url in split_urls(value)])
        return ConfigError(
            f"{name}={value!r} {why} (set it in the run context or {ENV_PREFIX}{name.upper()})"
        )

    url_fields = {f"{role}_base_url" for role in MODEL_ROLES}

    if context.threshold < 0:
        raise bad(
            "threshold",
            "is negative: entropies are >= 0, use 0 to route every step to the large model",
        )
    get_strategy(context.method).knobs_of(context.knobs)
    if context.step_separator not in STEP_SEPARATORS:
        raise bad("step_separator", "must be '\\n\\n' (a blank line ends a step) or '\\n'")
    if not 0 <= context.large_rate <= 1:
        raise bad("large_rate", "must be a probability in [0, 1]")
    if context.glimpse_mode not in GLIMPSE_MODES:
        raise bad("glimpse_mode", f"must be one of {list(GLIMPSE_MODES)}")
    if context.top_k < 1:
        raise bad("top_k", "must be at least 1")
    for name in (
        "step_max_tokens",
        "token_budget",
        "max_steps",
        "answer_max_tokens",
        "max_chain_prompt_tokens",
    ):
        if getattr(context, name) < 1:
            raise bad(name, "must be at least 1")
    chain_limit = context.max_chain_tokens
    if chain_limit is not None and chain_limit <= context.answer_max_tokens:
        raise bad(
            "max_chain_tokens",
            f"leaves no room for reasoning: it must exceed answer_max_tokens="
            f"{context.answer_max_tokens}, which it keeps for the answer",
        )
    if context.max_steps > MAX_STEPS_LIMIT:
        raise bad("max_steps", f"is above the graph's limit of {MAX_STEPS_LIMIT}")
    if not 0 <= context.temperature <= MAX_TEMPERATURE:
        raise bad("temperature", f"must be in [0, {MAX_TEMPERATURE:g}]")
    if not 0 < context.top_p <= 1:
        raise bad("top_p", "must be in (0, 1]")
    if context.answer_model not in MODEL_ROLES:
        raise bad("answer_model", f"must be one of {list(MODEL_ROLES)}")
    if context.request_timeout <= 0:
        raise bad("request_timeout", "must be > 0 seconds")
    if context.max_retries < 0:
        raise bad("max_retries", "must be >= 0")
    if context.replica_affinity not in REPLICA_AFFINITIES:
        raise bad("replica_affinity", f"must be one of {list(REPLICA_AFFINITIES)}")
    if context.replica_cooldown < 0:
        raise bad("replica_cooldown", "must be >= 0 seconds")
    if not _HEADER_NAME.fullmatch(context.affinity_header):
        raise bad("affinity_header", "must be an HTTP header name such as x-user-id, or empty")
    for role in MODEL_ROLES:
        name = f"{role}_base_url"
        urls = split_urls(getattr(context, name))
        if not any(urls):
            raise bad(name, "lists no URL: give one, or each replica's separated by commas")
        seen: set[str] = set()
        for url in urls:
            if not url.startswith(("http://", "https://")):
                raise bad(
                    name,
                    f"holds {redact_url(url)!r}, which lacks the http:// or https:// of a URL "
                    "such as http://127.0.0.1:8001/v1",
                )
            if url.rstrip("/") in seen:
                raise bad(name, f"lists {redact_url(url)!r} twice: give each replica once")
            seen.add(url.rstrip("/"))
        if not getattr(context, f"{role}_model"):
            raise bad(f"{role}_model", "is empty: give the served model name")
