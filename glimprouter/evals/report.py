"""Tables and Pareto plots of recorded evals: accuracy against latency and large-model work."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from glimprouter.evals.runner import CONFIG_FILE, read_results


@dataclass(frozen=True)
class Row:
    """One method (at one setting) on one dataset."""

    dataset: str
    label: str  # method and its setting, e.g. "glimprouter t=1.0"
    records: int
    failed: int
    accuracy: float  # mean over repeats
    accuracy_std: float  # std over repeats (0 with one repeat)
    latency_p50: float
    latency_p90: float
    small_tokens: float  # mean completion tokens per problem
    large_tokens: float
    large_step_share: float
    large_token_share: float
    requests: float  # mean requests per problem, both models


def method_label(config: dict[str, Any]) -> str:
    method = config["method"]
    if method == "random":
        return f"random p={config['large_rate']:g}"
    if method in ("small-only", "large-only"):
        return method
    return f"{method} t={config['threshold']:g}"


def summarise(config: dict[str, Any], records: Sequence[dict[str, Any]]) -> Row:
    """The figures of one results directory."""
    ok = [r for r in records if not r.get("error")]
    by_repeat: dict[int, list[bool]] = defaultdict(list)
    for record in ok:
        by_repeat[record["repeat"]].append(bool(record["correct"]))
    accuracies = [float(np.mean(v)) for v in by_repeat.values()] or [0.0]
    latencies = np.array([r["latency_s"] for r in ok]) if ok else np.zeros(1)
    small = np.array([r["small_completion_tokens"] for r in ok], dtype=float)
    large = np.array([r["large_completion_tokens"] for r in ok], dtype=float)
    steps = sum(r["steps"] for r in ok)
    large_steps = sum(r["large_steps"] for r in ok)
    tokens = small.sum() + large.sum()
    return Row(
        dataset=config["dataset"],
        label=method_label(config),
        records=len(records),
        failed=len(records) - len(ok),
        accuracy=float(np.mean(accuracies)),
        accuracy_std=float(np.std(accuracies)),
        latency_p50=float(np.percentile(latencies, 50)),
        latency_p90=float(np.percentile(latencies, 90)),
        small_tokens=float(small.mean()) if ok else 0.0,
        large_tokens=float(large.mean()) if ok else 0.0,
        large_step_share=large_steps / steps if steps else 0.0,
        large_token_share=float(large.sum() / tokens) if tokens else 0.0,
        requests=float(np.mean([r["small_requests"] + r["large_requests"] for r in ok]))
        if ok
        else 0.0,
    )


def load_rows(directories: Sequence[Path]) -> list[Row]:
    """One row per results directory that holds at least one record."""
    loaded = [(json.loads((d / CONFIG_FILE).read_text()), read_results(d)) for d in directories]
    return [summarise(config, records) for config, records in loaded if records]


def markdown(rows: Sequence[Row]) -> str:
    """One table per dataset, methods sorted by large-token share."""
    header = (
        "| method | n | accuracy | latency p50 / p90 (s) | small tok | large tok | "
        "large steps | large tokens | requests |\n"
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    )
    out = []
    for dataset in sorted({row.dataset for row in rows}):
        out += [f"### {dataset}", "", header]
        for row in sorted(
            (r for r in rows if r.dataset == dataset), key=lambda r: (r.large_token_share, r.label)
        ):
            failed = f" ({row.failed} failed)" if row.failed else ""
            out.append(
                f"| {row.label} | {row.records}{failed} | {100 * row.accuracy:.1f} ± "
                f"{100 * row.accuracy_std:.1f}% | {row.latency_p50:.1f} / {row.latency_p90:.1f} | "
                f"{row.small_tokens:.0f} | {row.large_tokens:.0f} | "
                f"{100 * row.large_step_share:.1f}% | {100 * row.large_token_share:.1f}% | "
                f"{row.requests:.1f} |"
            )
        out.append("")
    return "\n".join(out)


def pareto_plot(rows: Sequence[Row], path: Path) -> Path:
    """Accuracy against latency and against large-token share, one panel pair per dataset."""
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
            (share_axis, lambda r: 100 * r.large_token_share, "large-model share of tokens (%)"),
        ):
            for row in subset:
                axis.errorbar(
                    x_of(row), 100 * row.accuracy, yerr=100 * row.accuracy_std, fmt="o", capsize=3
                )
                axis.annotate(
                    row.label,
                    (x_of(row), 100 * row.accuracy),
                    textcoords="offset points",
                    xytext=(5, 5),
                    fontsize=8,
                )
            frontier = _frontier([(x_of(r), 100 * r.accuracy) for r in subset])
            axis.plot(*zip(*frontier, strict=True), "--", color="grey", linewidth=1)
            axis.set_xlabel(x_label)
            axis.set_ylabel("accuracy (%)")
            axis.set_title(dataset)
            axis.grid(alpha=0.3)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    return path


def _frontier(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points no other point beats on both cost (lower) and accuracy (higher)."""
    frontier: list[tuple[float, float]] = []
    for x, y in sorted(points, key=lambda p: (p[0], -p[1])):
        if not frontier or y > frontier[-1][1]:
            frontier.append((x, y))
    return frontier
