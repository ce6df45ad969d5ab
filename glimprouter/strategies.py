"""Routing strategies: who writes each step. GlimpRouter and the baselines it is compared with.

One interface and a registry by name, as RouteLLM does it. A strategy either picks the writer
before the step (`choose`, possibly from the small model's glimpse), or lets the small model draft
every step and reviews the draft (`review` is "logprobs" or "judge"), after which `rewrite`
decides whether the large model writes the step instead.

What a strategy costs is for a server to bound (glimprouter.endpoint.limits): each strategy
names the knobs it reads and which way of moving each sends more steps to the large model
(`costlier`), and `costing_no_more` says which choices of a method, a glimpse mode or an answer
model cost no more than a given one.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

from glimprouter.errors import ConfigError
from glimprouter.scoring import mean_token_entropy, perplexity

ModelRole = Literal["small", "large"]  # the model that writes a step
MODEL_ROLES: tuple[ModelRole, ...] = ("small", "large")  # cheapest first

GlimpseMode = Literal["stream", "probe"]
# Cheapest first: probe sends a one-token request before every step, stream none.
GLIMPSE_MODES: tuple[GlimpseMode, ...] = ("stream", "probe")

Review = Literal["none", "logprobs", "judge"]
Direction = Literal["lower", "higher"]


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
    costlier: ClassVar[dict[str, Direction]] = {}
    """The knobs the strategy reads, each with the way of moving it that sends more steps to the
    large model."""

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
    costlier = {"threshold": "lower"}

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
    costlier = {"large_rate": "higher"}

    def choose(self, entropy, threshold, large_rate, key):
        return "large" if random.Random(key).random() < large_rate else "small"


class StepEntropy(Strategy):
    name = "step-entropy"
    description = "H_step: small drafts; mean token entropy >= threshold: large rewrites"
    review = "logprobs"
    costlier = {"threshold": "lower"}

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
    costlier = {"threshold": "higher"}

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


CHEAPEST_METHOD = "small-only"
"""The method that costs least on any question: one small-model request per step, nothing else.
The others have no order among them: what each costs depends on its threshold or large_rate and
on the question (specreason rewriting every draft costs more than large-only)."""

# The values of each choice knob; the glimpse modes and answer models cheapest first.
CHOICES: dict[str, tuple[str, ...]] = {
    "method": tuple(STRATEGIES),
    "glimpse_mode": GLIMPSE_MODES,
    "answer_model": MODEL_ROLES,
}


def costing_no_more(knob: str, value: str) -> tuple[str, ...]:
    """The values of `knob` (a key of CHOICES) that cost no more than `value` on any question:
    for a method itself and the cheapest method, else `value` and those before it."""
    if knob == "method":
        return tuple(dict.fromkeys((value, CHEAPEST_METHOD)))
    order = CHOICES[knob]
    return order[: order.index(value) + 1]


def get_strategy(name: str) -> Strategy:
    """The strategy registered as `name`, or an error listing the valid ones."""
    try:
        return STRATEGIES[name]
    except KeyError:
        raise ConfigError(
            f"unknown method {name!r}; valid methods: {sorted(STRATEGIES)} (set --method or "
            "GLIMPROUTER_METHOD)"
        ) from None
