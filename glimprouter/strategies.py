"""Routing strategies: who writes each step. GlimpRouter and the baselines it is compared with.

One interface and a registry by name, as RouteLLM does it. A strategy either picks the writer
before the step (`choose`, possibly from the small model's glimpse), or lets the small model draft
every step and reviews the draft (`review` is "logprobs" or "judge"), after which `rewrite`
decides whether the large model writes the step instead.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

from glimprouter.errors import ConfigError
from glimprouter.scoring import mean_token_entropy, perplexity

ModelRole = Literal["small", "large"]  # the model that writes a step
MODEL_ROLES: tuple[ModelRole, ...] = ("small", "large")

Review = Literal["none", "logprobs", "judge"]


def choose_writer(entropy: float, threshold: float) -> ModelRole:
    """The paper's rule: a glimpse entropy at or above the threshold goes to the large model."""
    return "large" if entropy >= threshold else "small"


class Strategy:
    """How the writer of each step is chosen. Subclasses override what they use."""

    name: ClassVar[str]
    description: ClassVar[str]
    glimpses: ClassVar[bool] = False
    """The small model glimpses (one token, top-k logprobs) before each step."""
    review: ClassVar[Review] = "none"
    """How a small draft is scored: not at all, from its own logprobs, or by the large model."""

    def choose(
        self, entropy: float | None, threshold: float, large_rate: float, key: str
    ) -> ModelRole:
        """The writer of the next step; reviewing strategies always let the small model draft."""
        return "small"

    def score_draft(self, token_logprobs: Sequence[dict[str, Any]]) -> float:
        """A draft's score from its own per-token logprobs (review == "logprobs")."""
        raise NotImplementedError(f"{self.name} does not score drafts from logprobs")

    def rewrite(self, score: float, threshold: float) -> bool:
        """Whether the large model rewrites a draft with this score."""
        return False


class GlimpRouter(Strategy):
    name = "glimprouter"
    description = "the small model glimpses one token; entropy >= threshold: large writes"
    glimpses = True

    def choose(self, entropy, threshold, large_rate, key):
        return choose_writer(entropy, threshold)


class SmallOnly(Strategy):
    name = "small-only"
    description = "the small model writes every step"


class LargeOnly(Strategy):
    name = "large-only"
    description = "the large model writes every step"

    def choose(self, entropy, threshold, large_rate, key):
        return "large"


class RandomRouting(Strategy):
    name = "random"
    description = "each step goes to the large model with probability large_rate (seeded)"

    def choose(self, entropy, threshold, large_rate, key):
        return "large" if random.Random(key).random() < large_rate else "small"


class StepEntropy(Strategy):
    name = "step-entropy"
    description = "H_step: small drafts; mean token entropy >= threshold: large rewrites"
    review = "logprobs"

    def score_draft(self, token_logprobs):
        return mean_token_entropy([token["top_logprobs"] for token in token_logprobs])

    def rewrite(self, score, threshold):
        return score >= threshold


class StepPerplexity(StepEntropy):
    name = "step-ppl"
    description = "PPL_step: small drafts; perplexity >= threshold: large rewrites"

    def score_draft(self, token_logprobs):
        return perplexity([token["logprob"] for token in token_logprobs])


class SpecReason(Strategy):
    name = "specreason"
    description = "SpecReason: small drafts; large scores it 0-9; below threshold: large rewrites"
    review = "judge"

    def rewrite(self, score, threshold):
        return score < threshold


STRATEGIES: dict[str, Strategy] = {
    strategy.name: strategy
    for strategy in (
        GlimpRouter(),
        SmallOnly(),
        LargeOnly(),
        RandomRouting(),
        StepEntropy(),
        StepPerplexity(),
        SpecReason(),
    )
}


def get_strategy(name: str) -> Strategy:
    """The strategy registered as `name`, or an error listing the valid ones."""
    try:
        return STRATEGIES[name]
    except KeyError:
        raise ConfigError(
            f"unknown method {name!r}; valid methods: {sorted(STRATEGIES)} (set --method or "
            "GLIMPROUTER_METHOD)"
        ) from None
