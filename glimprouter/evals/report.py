"""Tables and Pareto plots of recorded evals: accuracy against latency and large-model work."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from glimprouter.errors import ConfigError
from glimprouter.evals import stats
from glimprouter.evals.results import CONFIG_FILE, read_results
from glimprouter.strategies import MODEL_ROLES, get_strategy


@dataclass(frozen=True)
class Row:
    """One method (at one setting) on one dataset, each figure with its 95% interval over
    problems (see `stats`)."""

    dataset: str
    label: str  # method and its setting, e.g. "glimprouter t=1.0"
    directory: str
    split: str  # "dev", "test", or "all" for a run over the whole dataset
    matched_from: str | None  # random at the large share realised in these runs
    records: int
    failed: int
    ungraded: int  # answers the grader could not finish: counted wrong (`grading`)
    accuracy: stats.Estimate
    latency_p50: stats.Estimate
    latency_p90: float
    small_tokens: float  # mean completion tokens per problem
    large_tokens: float
    large_step_share: float
    large_token_share: stats.Estimate
    requests: float  # mean requests per problem, both models
    # Per model, the share of its prompt tokens its server's prefix cache served, over the
    # records that carry the count (None: none does, e.g. results from before it was recorded).
    cache_hit_rate: dict[str, float | None]
    outcomes: dict[str, list[tuple[bool, float]]]  # per problem: (correct, latency) per repeat


def method_label(config: dict[str, Any]) -> str:
    return get_strategy(config["method"]).label(config)


def summarise(
    config: dict[str, Any], records: Sequence[dict[str, Any]], directory: Path | str = ""
) -> Row:
    """The figures of one results directory."""
    ok = [r for r in records if not r.get("error")]
    outcomes: dict[str, list[tuple[bool, float]]] = defaultdict(list)
    tokens: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for record in ok:
        key = str(record["problem_id"])
        outcomes[key].append((bool(record["correct"]), float(record["latency_s"])))
        small, large = record["small_completion_tokens"], record["large_completion_tokens"]
        tokens[key].append((large, small + large))
    latencies = np.array([r["latency_s"] for r in ok]) if ok else np.zeros(1)
    steps = sum(r["steps"] for r in ok)
    large_steps = sum(r["large_steps"] for r in ok)
    return Row(
        dataset=config["dataset"],
        label=method_label(config),
        directory=str(directory),
        split=config.get("split", "all"),
        matched_from=config.get("large_rate_matched_from"),
        records=len(records),
        failed=len(records) - len(ok),
        ungraded=sum("grading" in r for r in ok),
        accuracy=stats.accuracy({p: [c for c, _ in o] for p, o in outcomes.items()}),
        latency_p50=stats.median({p: [t for _, t in o] for p, o in outcomes.items()}),
        latency_p90=float(np.percentile(latencies, 90)),
        small_tokens=float(np.mean([r["small_completion_tokens"] for r in ok])) if ok else 0.0,
        large_tokens=float(np.mean([r["large_completion_tokens"] for r in ok])) if ok else 0.0,
        large_step_share=large_steps / steps if steps else 0.0,
        large_token_share=stats.share(tokens),
        requests=float(np.mean([r["small_requests"] + r["large_requests"] for r in ok]))
        if ok
        else 0.0,
        cache_hit_rate={role: cache_hit_rate(ok, role) for role in MODEL_ROLES},
        outcomes=dict(outcomes),
    )


def cache_hit_rate(records: Sequence[dict[str, Any]], role: str) -> float | None:
    """Cached over counted prompt tokens of `role` (those of the requests whose server reported
    its cache) in the records that count them; None when none does or they hold no prompt tokens
    of that model. Records from before the counted tokens were kept count all their prompt."""
    counted = [r for r in records if f"{role}_cached_prompt_tokens" in r]
    prompt = sum(
        r.get(f"{role}_counted_prompt_tokens", r.get(f"{role}_prompt_tokens", 0)) for r in counted
    )
    if not prompt:
        return None
    return sum(r[f"{role}_cached_prompt_tokens"] for r in counted) / prompt


def load_rows(directories: Sequence[Path]) -> list[Row]:
    """One row per results directory that holds at least one record; refuses a dataset whose
    runs come from different splits (they do not hold the same problems)."""
    loaded = [(json.loads((d / CONFIG_FILE).read_text()), read_results(d), d) for d in directories]
    rows = [summarise(config, records, d) for config, records, d in loaded if records]
    for dataset in sorted({row.dataset for row in rows}):
        splits = {row.split: row.directory for row in rows if row.dataset == dataset}
        if len(splits) > 1:
            shown = ", ".join(f"{split} ({where})" for split, where in sorted(splits.items()))
            raise ConfigError(
                f"these results mix splits of {dataset}: {shown}; report one split at a time"
            )
    return rows


def _rate(rate: float | None) -> str:
    return "–" if rate is None else f"{100 * rate:.0f}%"


def _percent(estimate: stats.Estimate) -> str:
    return f"{100 * estimate.value:.1f}% [{100 * estimate.low:.1f}, {100 * estimate.high:.1f}]"


def markdown(rows: Sequence[Row]) -> str:
    """One table per dataset, methods sorted by large-token share; intervals are 95% over
    problems."""
    header = (
        "| method | n | accuracy [95% CI] | latency p50 [95% CI] / p90 (s) | small tok | "
        "large tok | large steps | large tokens [95% CI] | requests | prefix cache small / "
        "large |\n"
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    )
    out = []
    for dataset in sorted({row.dataset for row in rows}):
        subset = [r for r in rows if r.dataset == dataset]
        split = subset[0].split
        out += [f"### {dataset}" + ("" if split == "all" else f" ({split} split)"), "", header]
        for row in sorted(subset, key=lambda r: (r.large_token_share.value, r.label)):
            notes = [f"{row.failed} failed"] * bool(row.failed)
            notes += [f"{row.ungraded} ungraded"] * bool(row.ungraded)
            failed = f" ({', '.join(notes)})" if notes else ""
            p50 = row.latency_p50
            out.append(
                f"| {row.label} | {row.records}{failed} | {_percent(row.accuracy)} | "
                f"{p50.value:.1f} [{p50.low:.1f}, {p50.high:.1f}] / {row.latency_p90:.1f} | "
                f"{row.small_tokens:.0f} | {row.large_tokens:.0f} | "
                f"{100 * row.large_step_share:.1f}% | {_percent(row.large_token_share)} | "
                f"{row.requests:.1f} | {_rate(row.cache_hit_rate['small'])} / "
                f"{_rate(row.cache_hit_rate['large'])} |"
            )
        out.append("")
    return "\n".join(out)


def reference_rows(rows: Sequence[Row], against: str) -> dict[str, Row]:
    """Per dataset, the row a comparison is made against: the one whose label or method is
    `against`; a ConfigError names the choices when none or several match."""
    found: dict[str, Row] = {}
    for dataset in sorted({row.dataset for row in rows}):
        subset = [r for r in rows if r.dataset == dataset]
        matching = [r for r in subset if against in (r.label, r.label.split()[0])]
        if len(matching) > 1:
            raise ConfigError(
                f"--against {against!r} matches several runs of {dataset}: "
                f"{sorted(r.label for r in matching)}; give the full label"
            )
        if matching:
            found[dataset] = matching[0]
    if not found:
        labels = sorted({row.label for row in rows})
        raise ConfigError(f"--against {against!r} names no run here; the runs are {labels}")
    return found


def paired_markdown(rows: Sequence[Row], against: str) -> str:
    """Every row against the reference run `against` of its dataset, on the problems both ran:
    accuracy difference and latency ratio with paired-bootstrap intervals and p-values."""
    references = reference_rows(rows, against)
    out = []
    for dataset, reference in references.items():
        others = [r for r in rows if r.dataset == dataset and r is not reference]
        out += [f"### {dataset}: against {reference.label}", "", *_paired_table(others, reference)]
    return "\n".join(out)


def matched_markdown(rows: Sequence[Row]) -> str:
    """Each run against the random baseline that matched its large-step share (`--large-rate
    match:DIR`), when both are here: does the glimpse beat chance at the same cost?"""
    by_directory = {Path(row.directory).resolve(): row for row in rows}
    out = []
    for baseline in (r for r in rows if r.matched_from):
        source = by_directory.get(Path(baseline.matched_from).resolve())
        if source is None or source.dataset != baseline.dataset:
            continue
        title = f"### {baseline.dataset}: {source.label} against random at its large share"
        out += [title, "", *_paired_table([source], baseline)]
    return "\n".join(out)


def _paired_table(rows: Sequence[Row], reference: Row) -> list[str]:
    lines = [
        "| method | problems | accuracy Δ (pts) [95% CI] | p | latency ratio [95% CI] | p | "
        "verdict |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for row in sorted(rows, key=lambda r: r.label):
        try:
            comparison = stats.paired(row.outcomes, reference.outcomes)
        except ValueError:
            lines.append(f"| {row.label} | <2 | | | | | too few problems in common |")
            continue
        delta, ratio = comparison.accuracy_difference, comparison.latency_ratio
        lines.append(
            f"| {row.label} | {comparison.problems} | {100 * delta.value:+.1f} "
            f"[{100 * delta.low:+.1f}, {100 * delta.high:+.1f}] | {comparison.accuracy_p:.3g} "
            f"({comparison.accuracy_test}) | {ratio.value:.2f}x [{ratio.low:.2f}, "
            f"{ratio.high:.2f}] | {comparison.latency_p:.3g} | {verdict(comparison)} |"
        )
    return [*lines, ""]


def verdict(comparison: stats.Paired) -> str:
    """The comparison in words, as far as its intervals allow."""
    delta, ratio = comparison.accuracy_difference, comparison.latency_ratio
    if not comparison.distinguishable:
        accuracy = "accuracy not distinguishable"
    else:
        accuracy = "more accurate" if delta.value > 0 else "less accurate"
    if not ratio.excludes(1.0):
        latency = "latency not distinguishable"
    else:
        latency = "faster" if ratio.value < 1 else "slower"
    return f"{accuracy}; {latency}"


def pareto_plot(rows: Sequence[Row], path: Path) -> Path:
    """Accuracy against latency and against large-token share, one panel pair per dataset, with
    95% intervals as error bars."""
    # A bare Figure draws without pyplot, so the caller's backend (a notebook's inline one) is
    # left alone.
    from matplotlib.figure import Figure

    datasets = sorted({row.dataset for row in rows})
    figure = Figure(figsize=(11, 4.2 * len(datasets)))
    axes = figure.subplots(len(datasets), 2, squeeze=False)
    for (latency_axis, share_axis), dataset in zip(axes, datasets, strict=True):
        subset = [row for row in rows if row.dataset == dataset]
        for axis, x_of, x_label in (
            (latency_axis, lambda r: r.latency_p50, "latency p50 (s)"),
            (
                share_axis,
                lambda r: _scaled(r.large_token_share, 100),
                "large-model share of tokens (%)",
            ),
        ):
            for row in subset:
                x = x_of(row)
                axis.errorbar(
                    x.value,
                    100 * row.accuracy.value,
                    xerr=[[x.value - x.low], [x.high - x.value]],
                    yerr=[[100 * (row.accuracy.value - row.accuracy.low)],
                          [100 * (row.accuracy.high - row.accuracy.value)]],
                    fmt="o",
                    capsize=3,
                )  # fmt: skip
                axis.annotate(
                    row.label,
                    (x.value, 100 * row.accuracy.value),
                    textcoords="offset points",
                    xytext=(5, 5),
                    fontsize=8,
                )
            frontier = _frontier([(x_of(r).value, 100 * r.accuracy.value) for r in subset])
            axis.plot(*zip(*frontier, strict=True), "--", color="grey", linewidth=1)
            axis.set_xlabel(x_label)
            axis.set_ylabel("accuracy (%)")
            axis.set_title(dataset)
            axis.grid(alpha=0.3)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    return path


def _scaled(estimate: stats.Estimate, factor: float) -> stats.Estimate:
    return stats.Estimate(factor * estimate.value, factor * estimate.low, factor * estimate.high)


def _frontier(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points no other point beats on both cost (lower) and accuracy (higher)."""
    frontier: list[tuple[float, float]] = []
    for x, y in sorted(points, key=lambda p: (p[0], -p[1])):
        if not frontier or y > frontier[-1][1]:
            frontier.append((x, y))
    return frontier
