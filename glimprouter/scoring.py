"""Scores of the small model's uncertainty, as pure functions over log-probabilities."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

TopLogprob = Mapping[str, Any]  # {"token": str, "logprob": float, "bytes": list[int] | None}


def token_key(entry: TopLogprob) -> tuple[int, ...] | str:
    """Identity of a candidate token: its bytes (or id), never its decoded string.

    Distinct tokens can decode to the same string (e.g. two partial UTF-8 sequences both shown
    as U+FFFD); keying by string would merge them and understate the entropy.
    """
    raw = entry.get("bytes")
    if raw is not None:
        return tuple(raw)
    return entry["token"]


def usable_logprob(value: Any) -> float | None:
    """`value` as a log-probability, or None when a faulty server sent no usable number.

    The rule for malformed replies: a missing or non-numeric value, NaN and +inf are unusable;
    -inf is a real (zero) probability.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if math.isnan(value) or value == math.inf:
        return None
    return float(value)


def logprob_of(entry: TopLogprob) -> float | None:
    """The entry's usable log-probability (see `usable_logprob`)."""
    return usable_logprob(entry.get("logprob"))


def has_mass(top_logprobs: Iterable[TopLogprob]) -> bool:
    """Whether any candidate has a usable, finite log-probability (something to score)."""
    return any(
        (value := logprob_of(entry)) is not None and value > -math.inf for entry in top_logprobs
    )


def top_k_entropy(top_logprobs: Iterable[TopLogprob]) -> float:
    """Entropy (nats) of the top-k candidates renormalised to sum to one.

    This is the paper's H_init: at most ln(k). Duplicated entries (same token bytes) count once;
    candidates with a log-probability of -inf carry no mass; unusable entries (see `logprob_of`)
    are left out, so fewer candidates than asked give the entropy of those given.
    """
    seen: dict[tuple[int, ...] | str, float] = {}
    for entry in top_logprobs:
        if (value := logprob_of(entry)) is not None:
            seen.setdefault(token_key(entry), value)
    return entropy_of_logprobs(list(seen.values()))


def entropy_of_logprobs(logprobs: Sequence[float]) -> float:
    """Entropy (nats) of the distribution proportional to exp(logprobs)."""
    values = np.asarray(logprobs, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        raise ValueError("no finite log-probabilities to score")
    probs = np.exp(values - values.max())
    probs /= probs.sum()
    nonzero = probs[probs > 0]
    return float(-(nonzero * np.log(nonzero)).sum())


def mean_token_entropy(per_token_top_logprobs: Sequence[Sequence[TopLogprob]]) -> float:
    """Mean over a step's tokens of each token's top-k entropy: the paper's H_step ablation.

    Tokens whose candidates carry nothing to score are left out.
    """
    scored = [top_k_entropy(top) for top in per_token_top_logprobs if has_mass(top)]
    if not scored:
        raise ValueError("a step without scorable tokens has no entropy")
    return float(np.mean(scored))


def perplexity(token_logprobs: Sequence[Any]) -> float:
    """exp of the mean negative log-probability of the sampled tokens: the PPL_step ablation.

    Unusable values (see `usable_logprob`) are left out.
    """
    usable = [value for value in map(usable_logprob, token_logprobs) if value is not None]
    values = np.asarray(usable, dtype=np.float64)
    if values.size == 0:
        raise ValueError("a step without scorable tokens has no perplexity")
    with np.errstate(over="ignore"):
        return float(np.exp(-values.mean()))


def judge_score(top_logprobs: Iterable[TopLogprob]) -> float:
    """SpecReason's score: the expected digit 0-9 under the judge's renormalised top-k digits.

    0 when no digit is among the candidates (the judge did not answer with a score).
    """
    digits: dict[int, float] = {}
    for entry in top_logprobs:
        token = entry["token"].strip()
        value = logprob_of(entry)
        if len(token) == 1 and token.isdigit() and value is not None and value > -math.inf:
            digits.setdefault(int(token), value)
    if not digits:
        return 0.0
    values = np.array(list(digits.values()))
    probs = np.exp(values - values.max())
    probs /= probs.sum()
    return float(np.dot(list(digits.keys()), probs))
