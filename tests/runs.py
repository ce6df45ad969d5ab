"""An eval's records as written to its results directory, and the part of a record that two runs
of the same chains share."""

from __future__ import annotations

import json
from pathlib import Path

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
