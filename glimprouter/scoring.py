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
