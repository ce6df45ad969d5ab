"""Scores of the small model's uncertainty, as pure functions over log-probabilities."""

from __future__ import annotations

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


def top_k_entropy(top_logprobs: Iterable[TopLogprob]) -> float:
    """Entropy (nats) of the top-k candidates renormalised to sum to one.

    This is the paper's H_init: at most ln(k). Duplicated entries (same token bytes) count once;
    candidates with a log-probability of -inf carry no mass.
    """
    seen: dict[tuple[int, ...] | str, float] = {}
    for entry in top_logprobs:
        seen.setdefault(token_key(entry), float(entry["logprob"]))
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


def mean_token_entropy(per_token_top_logprobs: Sequence[Iterable[TopLogprob]]) -> float:
    """Mean over a step's tokens of each token's top-k entropy: the paper's H_step ablation."""
    if not per_token_top_logprobs:
        raise ValueError("a step without tokens has no entropy")
    return float(np.mean([top_k_entropy(top) for top in per_token_top_logprobs]))


def perplexity(token_logprobs: Sequence[float]) -> float:
    """exp of the mean negative log-probability of the sampled tokens: the PPL_step ablation."""
    values = np.asarray(token_logprobs, dtype=np.float64)
    if values.size == 0:
        raise ValueError("a step without tokens has no perplexity")
    return float(np.exp(-values.mean()))


def judge_score(top_logprobs: Iterable[TopLogprob]) -> float:
    """SpecReason's score: the expected digit 0-9 under the judge's renormalised top-k digits.

    0 when no digit is among the candidates (the judge did not answer with a score).
    """
    digits: dict[int, float] = {}
    for entry in top_logprobs:
        token = entry["token"].strip()
        if len(token) == 1 and token.isdigit() and np.isfinite(entry["logprob"]):
            digits.setdefault(int(token), float(entry["logprob"]))
    if not digits:
        return 0.0
    values = np.array(list(digits.values()))
    probs = np.exp(values - values.max())
    probs /= probs.sum()
    return float(np.dot(list(digits.keys()), probs))
