"""Uncertainty of eval figures: intervals over problems, and paired comparisons of two methods.

The unit of resampling is the problem: a problem's repeats are kept together (they share the
question, so they are not independent draws), and two methods are compared on the problems both
ran. The statistics are scipy's: Wilson intervals and exact binomial (McNemar) tests from
`scipy.stats.binomtest`, percentile bootstraps from `scipy.stats.bootstrap`, and sign-flip
permutation tests from `scipy.stats.permutation_test`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
RESAMPLES = 2000
SEED = 0


@dataclass(frozen=True)
class Estimate:
    """A figure and its confidence interval (`low`, `high`); the interval is None-free: with
    too little data it is the figure itself."""

    value: float
    low: float
    high: float

    def excludes(self, value: float) -> bool:
        """Whether `value` lies outside the interval (e.g. 0 for a difference)."""
        return not self.low <= value <= self.high


def accuracy(correct_by_problem: Mapping[str, Sequence[bool]], seed: int = SEED) -> Estimate:
    """Mean accuracy over problems (each problem's repeats averaged first), with a 95% interval:
    Wilson's with one repeat per problem, else a bootstrap over problems."""
    per_problem = [list(map(bool, outcomes)) for outcomes in correct_by_problem.values()]
    if not per_problem:
        return Estimate(0.0, 0.0, 0.0)
    if all(len(outcomes) == 1 for outcomes in per_problem):
        right = sum(outcomes[0] for outcomes in per_problem)
        interval = stats.binomtest(right, len(per_problem)).proportion_ci(
            confidence_level=CONFIDENCE, method="wilson"
        )
        return Estimate(right / len(per_problem), float(interval.low), float(interval.high))
    means = np.array([np.mean(outcomes) for outcomes in per_problem])
    return _bootstrap([means], lambda m: float(np.mean(m)), seed)


def median(values_by_problem: Mapping[str, Sequence[float]], seed: int = SEED) -> Estimate:
    """The median of every value (e.g. each record's latency), with a bootstrap interval that
    resamples whole problems."""
    groups = [np.asarray(values, dtype=float) for values in values_by_problem.values()]
    return _cluster_bootstrap(groups, lambda chosen: float(np.median(np.concatenate(chosen))), seed)


Pairs = Mapping[str, Sequence[tuple[float, float]]]
"""Per problem, one (part, whole) or (correct, latency) pair per record."""


def share(parts_by_problem: Pairs, seed: int = SEED) -> Estimate:
    """Sum of the parts over the sum of the wholes, from (part, whole) pairs per record (e.g.
    the large model's tokens and all tokens), with a bootstrap interval over problems."""
    groups = [np.asarray(pairs, dtype=float).reshape(-1, 2) for pairs in parts_by_problem.values()]

    def ratio(chosen: list[np.ndarray]) -> float:
        totals = np.concatenate(chosen).sum(axis=0)
        return float(totals[0] / totals[1]) if totals[1] else 0.0

    return _cluster_bootstrap(groups, ratio, seed)


@dataclass(frozen=True)
class Paired:
    """One method against a reference on the problems both ran."""

    problems: int
    accuracy_difference: Estimate  # method minus reference, as a share
    accuracy_p: float
    accuracy_test: str  # "McNemar exact" or "sign-flip permutation"
    latency_ratio: Estimate  # method's median latency over the reference's
    latency_p: float

    @property
    def distinguishable(self) -> bool:
        """Whether the accuracy difference's interval leaves out zero."""
        return self.accuracy_difference.excludes(0.0)


def paired(method: Pairs, reference: Pairs, seed: int = SEED) -> Paired:
    """Compare per-problem (correct, latency) outcomes of `method` against `reference` on their
    common problems: the accuracy difference with a paired-bootstrap interval and a p-value
    (McNemar's exact test when every problem has one repeat in both, else a paired sign-flip
    permutation test), and the ratio of median latencies with its paired-bootstrap interval and
    a permutation p-value on the per-problem log latency ratio."""
    common = sorted(set(method) & set(reference))
    if len(common) < 2:
        raise ValueError("fewer than two problems in common")
    ours = [np.array(method[p], dtype=float) for p in common]
    theirs = [np.array(reference[p], dtype=float) for p in common]
    differences = np.array(
        [o[:, 0].mean() - t[:, 0].mean() for o, t in zip(ours, theirs, strict=True)]
    )
    difference = _bootstrap([differences], lambda d: float(np.mean(d)), seed)
    if all(len(o) == 1 and len(t) == 1 for o, t in zip(ours, theirs, strict=True)):
        only_ours = int(sum(o[0, 0] > t[0, 0] for o, t in zip(ours, theirs, strict=True)))
        only_theirs = int(sum(o[0, 0] < t[0, 0] for o, t in zip(ours, theirs, strict=True)))
        accuracy_p = mcnemar_exact(only_ours, only_theirs)
        test = "McNemar exact"
    else:
        accuracy_p = sign_flip_p(differences, seed)
        test = "sign-flip permutation"

    def median_ratio(indices: np.ndarray) -> float:
        chosen = indices.astype(int)
        numerator = np.median(np.concatenate([ours[i][:, 1] for i in chosen]))
        denominator = np.median(np.concatenate([theirs[i][:, 1] for i in chosen]))
        return float(numerator / denominator) if denominator else float("inf")

    indices = np.arange(len(common), dtype=float)
    ratio = _bootstrap([indices], median_ratio, seed)
    log_ratios = np.array(
        [np.log(o[:, 1].mean() / t[:, 1].mean()) for o, t in zip(ours, theirs, strict=True)]
    )
    return Paired(
        problems=len(common),
        accuracy_difference=difference,
        accuracy_p=accuracy_p,
        accuracy_test=test,
        latency_ratio=ratio,
        latency_p=sign_flip_p(log_ratios, seed),
    )


def mcnemar_exact(only_first: int, only_second: int) -> float:
    """McNemar's exact two-sided p-value from the discordant pairs: problems only the first
    method got right, and those only the second did."""
    discordant = only_first + only_second
    if discordant == 0:
        return 1.0
    return float(stats.binomtest(only_first, discordant, 0.5).pvalue)


def sign_flip_p(differences: np.ndarray, seed: int = SEED) -> float:
    """Two-sided p-value of a mean paired difference of zero: a permutation test that flips
    the sign of each problem's difference (exact for up to 2^n <= RESAMPLES flips)."""
    if not np.any(differences):
        return 1.0
    result = stats.permutation_test(
        (differences,),
        np.mean,
        permutation_type="samples",
        n_resamples=RESAMPLES,
        alternative="two-sided",
        random_state=np.random.default_rng(seed),
    )
    return float(result.pvalue)


def _bootstrap(samples: list[np.ndarray], statistic, seed: int) -> Estimate:
    value = statistic(*samples)
    if len(samples[0]) < 2 or np.ptp(samples[0]) == 0:
        return Estimate(value, value, value)  # nothing varies: no spread to resample
    result = stats.bootstrap(
        samples,
        statistic,
        n_resamples=RESAMPLES,
        confidence_level=CONFIDENCE,
        method="percentile",
        vectorized=False,
        random_state=np.random.default_rng(seed),
    )
    interval = result.confidence_interval
    return Estimate(value, float(interval.low), float(interval.high))


def _cluster_bootstrap(groups: list[np.ndarray], statistic, seed: int) -> Estimate:
    """`statistic` of a list of per-problem arrays, resampling whole problems."""
    if not groups:
        return Estimate(0.0, 0.0, 0.0)
    indices = np.arange(len(groups), dtype=float)
    return _bootstrap([indices], lambda chosen: statistic([groups[int(i)] for i in chosen]), seed)
