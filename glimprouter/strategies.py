"""Routing strategies: who writes each step. GlimpRouter and the baselines it is compared with.

A strategy is one class (`Strategy`): whether the small model glimpses before each step, the
writer it `decide`s from what the step's `StepView` shows, and, for strategies that let the small
model draft every step, a `review` of the draft that keeps it or hands the step to the large
model. The registry holds the built-ins by name; `--method package.module:ClassName` (or
`register_strategy`) adds one written elsewhere.

What a strategy costs is for a server to bound (glimprouter.endpoint.limits): each strategy
names the knobs it reads and which way of moving each sends more steps to the large model
(`costlier`), and `costing_no_more` says which choices of a method, a glimpse mode or an answer
model cost no more than a given one.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import random
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, ClassVar, Literal

from glimprouter.errors import ConfigError
from glimprouter.scoring import mean_token_entropy, perplexity

ModelRole = Literal["small", "large"]  # the model that writes a step
MODEL_ROLES: tuple[ModelRole, ...] = ("small", "large")  # cheapest first

GlimpseMode = Literal["stream", "probe"]
# Cheapest first: probe sends a one-token request before every step, stream none.
GLIMPSE_MODES: tuple[GlimpseMode, ...] = ("stream", "probe")

Verdict = Literal["keep", "large"]  # what a review does with a small draft
Direction = Literal["lower", "higher"]


def choose_writer(entropy: float, threshold: float) -> ModelRole:
    """The paper's rule: a glimpse entropy at or above the threshold goes to the large model."""
    return "large" if entropy >= threshold else "small"


def knob(default: float, description: str, *, costlier: Direction) -> Any:
    """A field of a strategy's `Knobs` dataclass: its default, what it does (the --knob help and
    Studio's description) and the way of moving it that sends more steps to the large model."""
    return dataclasses.field(
        default=default, metadata={"description": description, "costlier": costlier}
    )


@dataclasses.dataclass(frozen=True)
class NoKnobs:
    """The knobs of a strategy that has none of its own."""


@dataclasses.dataclass(frozen=True)
class StepView:
    """What a strategy sees of the step about to be written."""

    index: int  # the step's index in the chain (0: the first)
    entropy: float | None  # the glimpse's top-k entropy (nats); None when it does not glimpse
    top_logprobs: Sequence[dict[str, Any]] | None  # the glimpsed token's top-k candidates
    steps: Sequence[dict[str, Any]]  # the steps written so far (glimprouter.Step)
    context: Any  # the run's RouterContext
    knobs: Any  # the strategy's own knobs (its `Knobs` dataclass), as the run set them
    key: str  # a seed for the step's random choices: per run, question and step
    # Ask the large model to score a draft 0-9 (SpecReason's judge): one request, counted in
    # the chain's usage; only reviews are given it.
    judge: Callable[[dict[str, Any]], Awaitable[float]] | None = None


class Strategy:
    """How the writer of each step is chosen. Subclass it and override what you use."""

    name: ClassVar[str] = ""
    """The registry name (`--method`); a class registered by import path goes by that path."""
    description: ClassVar[str] = ""
    glimpse: ClassVar[bool] = False
    """The small model glimpses (one token, top-k logprobs) before each step."""
    draft_logprobs: ClassVar[bool] = False
    """A draft is written with per-token logprobs and scored by `score_draft` (its `score`)."""
    step_writers: ClassVar[tuple[ModelRole, ...]] = MODEL_ROLES
    """The models that may write a step (warming skips a server that only writes the answer)."""
    Knobs: ClassVar[type] = NoKnobs
    """The strategy's own settings, a frozen dataclass of `knob` fields (set with --knob)."""
    costlier: ClassVar[dict[str, Direction]] = {}
    """The shared RouterContext knobs the strategy reads (threshold, large_rate), each with the
    way of moving it that sends more steps to the large model; its own are in `Knobs`."""

    def decide(self, view: StepView) -> ModelRole:
        """The writer of the next step; a reviewing strategy lets the small model draft."""
        return "small"

    async def review(self, view: StepView, draft: dict[str, Any]) -> Verdict:
        """Keep the small model's draft of the step, or have the large model write it."""
        return "keep"

    def score_draft(self, token_logprobs: Sequence[dict[str, Any]]) -> float:
        """A draft's score from its own per-token logprobs (when `draft_logprobs`)."""
        raise NotImplementedError(f"{self.name} does not score drafts from logprobs")

    def label(self, config: dict[str, Any]) -> str:
        """How reports name a run of this strategy with `config` (an eval's settings)."""
        return f"{self.name} t={config['threshold']:.4g}"

    @classmethod
    def drafts(cls) -> bool:
        """Whether the small model drafts every step for `review` to judge."""
        return cls.review is not Strategy.review

    @classmethod
    def own_costlier(cls) -> dict[str, Direction]:
        """The strategy's own knobs, each with the way that costs more."""
        return {f.name: f.metadata["costlier"] for f in dataclasses.fields(cls.Knobs)}

    def knobs_of(self, given: str) -> Any:
        """The strategy's knobs from `name=value,...` (a run's `knobs` setting)."""
        names = {f.name for f in dataclasses.fields(self.Knobs)}
        values: dict[str, float] = {}
        for item in filter(None, (part.strip() for part in given.split(","))):
            name, _, value = item.partition("=")
            if name.strip() not in names:
                raise ConfigError(
                    f"--knob {item!r}: {self.name} has no knob {name.strip()!r}; its knobs: "
                    f"{sorted(names)}"
                )
            try:
                values[name.strip()] = float(value)
            except ValueError:
                raise ConfigError(f"--knob {item!r}: give a number, as in {name}=0.5") from None
        return self.Knobs(**values)


class GlimpRouter(Strategy):
    name = "glimprouter"
    description = "the small model glimpses one token; entropy >= threshold: large writes"
    glimpse = True
    costlier = {"threshold": "lower"}

    def decide(self, view):
        return choose_writer(view.entropy, view.context.threshold)


class SmallOnly(Strategy):
    name = "small-only"
    description = "the small model writes every step"
    step_writers = ("small",)

    def label(self, config):
        return self.name


class LargeOnly(SmallOnly):
    name = "large-only"
    description = "the large model writes every step"
    step_writers = ("large",)

    def decide(self, view):
        return "large"


class RandomRouting(Strategy):
    name = "random"
    description = "each step goes to the large model with probability large_rate (seeded)"
    costlier = {"large_rate": "higher"}

    def decide(self, view):
        return "large" if random.Random(view.key).random() < view.context.large_rate else "small"

    def label(self, config):
        return f"random p={config['large_rate']:.3g}"


class StepEntropy(Strategy):
    name = "step-entropy"
    description = "H_step: small drafts; mean token entropy >= threshold: large rewrites"
    draft_logprobs = True
    costlier = {"threshold": "lower"}

    def score_draft(self, token_logprobs):
        return mean_token_entropy([token["top_logprobs"] for token in token_logprobs])

    async def review(self, view, draft):
        score = draft["score"]  # None: its logprobs held nothing to score, so it is kept
        return "large" if score is not None and score >= view.context.threshold else "keep"


class StepPerplexity(StepEntropy):
    name = "step-ppl"
    description = "PPL_step: small drafts; perplexity >= threshold: large rewrites"

    def score_draft(self, token_logprobs):
        return perplexity([token["logprob"] for token in token_logprobs])


class SpecReason(Strategy):
    name = "specreason"
    description = "SpecReason: small drafts; large scores it 0-9; below threshold: large rewrites"
    costlier = {"threshold": "higher"}

    async def review(self, view, draft):
        return "large" if await view.judge(draft) < view.context.threshold else "keep"


BUILT_INS: tuple[type[Strategy], ...] = (
    GlimpRouter,
    SmallOnly,
    LargeOnly,
    RandomRouting,
    StepEntropy,
    StepPerplexity,
    SpecReason,
)
STRATEGIES: dict[str, Strategy] = {cls.name: cls() for cls in BUILT_INS}
"""The registry: every strategy by the name `--method` gives it."""


def register_strategy(cls: type[Strategy], name: str | None = None) -> type[Strategy]:
    """Register a Strategy subclass under `name` (default: its `name`), e.g. from a notebook;
    usable as a class decorator. Returns the class."""
    if not (isinstance(cls, type) and issubclass(cls, Strategy)):
        raise ConfigError(f"{cls!r} is not a glimprouter.Strategy subclass")
    name = name or cls.name
    if not name:
        raise ConfigError(f"{cls.__name__} has no name: set its `name` or pass one")
    known = STRATEGIES.get(name)
    if known is not None and type(known) is not cls:
        raise ConfigError(f"method {name!r} is already {type(known).__name__}'s")
    STRATEGIES[name] = cls()
    return cls


def import_strategy(path: str) -> Strategy:
    """The strategy at import path `package.module:ClassName`, registered under that path.
    Only settings the operator gives (a flag, a run context) are imported: a request's method
    must already be registered (glimprouter.endpoint.requests)."""
    module_name, _, class_name = path.partition(":")
    if os.getcwd() not in sys.path:  # as `python -m` and uvicorn do: the project's own modules
        sys.path.insert(0, os.getcwd())
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as error:
        raise ConfigError(
            f"method {path!r}: cannot import {class_name!r} from {module_name!r} ({error}); "
            "give --method as package.module:ClassName on the Python path"
        ) from None
    register_strategy(cls, path)
    return STRATEGIES[path]


CHEAPEST_METHOD = "small-only"
"""The method that costs least on any question: one small-model request per step, nothing else.
The others have no order among them: what each costs depends on its threshold or large_rate and
on the question (specreason rewriting every draft costs more than large-only)."""


def choices(knob: str) -> tuple[str, ...]:
    """The values of a choice knob: the methods registered so far, the glimpse modes and answer
    models cheapest first."""
    if knob == "method":
        return tuple(STRATEGIES)
    return {"glimpse_mode": GLIMPSE_MODES, "answer_model": MODEL_ROLES}[knob]


def costing_no_more(knob: str, value: str) -> tuple[str, ...]:
    """The values of choice `knob` that cost no more than `value` on any
    question: for a method itself and the cheapest method, else `value` and those before it."""
    if knob == "method":
        return tuple(dict.fromkeys((value, CHEAPEST_METHOD)))
    order = choices(knob)
    return order[: order.index(value) + 1]


def get_strategy(name: str) -> Strategy:
    """The strategy registered as `name`, one imported from `package.module:ClassName`, or an
    error listing the valid ones."""
    if name in STRATEGIES:
        return STRATEGIES[name]
    if ":" in name:
        return import_strategy(name)
    raise ConfigError(
        f"unknown method {name!r}; valid methods: {sorted(STRATEGIES)} or package.module:ClassName "
        "(set --method or GLIMPROUTER_METHOD)"
    )
