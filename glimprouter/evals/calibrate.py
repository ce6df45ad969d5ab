"""Pick the threshold that sends a target share of steps to the large model, from recorded runs."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from glimprouter.errors import ConfigError
from glimprouter.evals.results import read_results


def recorded_entropies(directories: Sequence[Path]) -> list[float]:
    """Glimpse entropies of every recorded step."""
    return [
        step["entropy"]
        for directory in directories
        for record in read_results(directory)
        for step in record.get("trace") or []
        if step.get("entropy") is not None
    ]


def calibrate_threshold(
    entropies: Sequence[float], target_large_share: float
) -> tuple[float, float]:
    """(threshold, share it sends to the large model on these entropies).

    The threshold is the smallest recorded entropy among the top `target` share, so the rule
    `entropy >= threshold` routes at least that share (more where entropies tie).
    """
    if not 0 < target_large_share <= 1:
        raise ConfigError("--target-large-share must be in (0, 1]")
    values = np.sort(np.asarray(entropies, dtype=float))[::-1]
    if values.size == 0:
        raise ConfigError(
            "no glimpse entropies in these results: calibrate from a run of --method glimprouter"
        )
    count = max(1, int(round(target_large_share * values.size)))
    threshold = float(values[count - 1])
    return threshold, float(np.mean(values >= threshold))
