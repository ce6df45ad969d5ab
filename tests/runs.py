"""An eval's records as written to its results directory, and the part of a record that two runs
of the same chains share."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from glimprouter.evals.results import ResultsWriter, pin_configuration, run_identity
from glimprouter.graph.context import RouterContext

# What differs between two runs of the same chains: the clock.
VOLATILE, VOLATILE_IN_STEPS = {"latency_s"}, {"wall_s"}


def records(directory: Path) -> list[dict]:
    return [json.loads(line) for line in (directory / "results.jsonl").read_text().splitlines()]


def comparable(record: dict) -> dict:
    kept = {key: value for key, value in record.items() if key not in VOLATILE}
    kept["trace"] = [
        {key: value for key, value in step.items() if key not in VOLATILE_IN_STEPS}
        for step in kept.get("trace") or []
    ]
    return kept


def by_key(rows: list[dict]) -> dict[tuple[str, int], dict]:
    keyed = {(row["problem_id"], row["repeat"]): comparable(row) for row in rows}
    assert len(keyed) == len(rows), "a (problem, repeat) was recorded twice"
    return keyed


def write_run(
    directory: Path,
    context: RouterContext,
    rows: list[dict[str, Any]],
    repeats: int = 1,
    selection: dict[str, Any] | None = None,
) -> None:
    """A MATH-500 results directory of `context` holding `rows`, as an eval writes it."""
    pin_configuration(directory, run_identity("math500", context, repeats, selection=selection))
    writer = ResultsWriter(directory)
    for row in rows:
        writer.write(row)
    writer.close()
