"""A results directory: the configuration it is pinned to (config.json) and its records
(results.jsonl), written one fsynced line at a time and read back skipping any torn line; and
what is read across directories (a sweep's, a matched large-model rate)."""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from glimprouter.errors import ConfigError
from glimprouter.graph.context import RouterContext
from glimprouter.graph.settings import identity_fields

RESULTS_FILE = "results.jsonl"
CONFIG_FILE = "config.json"

# What must match for results to belong together (endpoint URLs and keys may change: a restarted
# server on another port serves the same model): the settings declared with identity=True.
CONFIG_FIELDS = identity_fields(RouterContext)


def run_identity(
    dataset: str,
    context: RouterContext,
    repeats: int,
    served: dict[str, str] | None = None,
    selection: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The configuration a results directory is pinned to; `served` is what check_endpoints
    says each role's server serves (the model behind the served name), and `selection` adds how
    its problems and settings were chosen (the split, a matched rate's source, a calibration)."""
    identity: dict[str, Any] = {"dataset": dataset, "repeats": repeats}
    identity.update({name: getattr(context, name) for name in CONFIG_FIELDS})
    identity.update({f"{role}_model_served": model for role, model in (served or {}).items()})
    identity.update(selection or {})
    return identity


def pin_configuration(output_dir: Path, identity: dict[str, Any]) -> None:
    """Write DIR/config.json, or refuse when DIR already holds results of another configuration."""
    path = output_dir / CONFIG_FILE
    if path.exists():
        recorded = json.loads(path.read_text())
        differences = [
            f"{key}: {recorded.get(key)!r} there, {identity.get(key)!r} now"
            for key in sorted(set(recorded) | set(identity))
            if recorded.get(key) != identity.get(key) and key != "repeats"
        ]
        if differences:
            raise ConfigError(
                f"{output_dir} holds results of another configuration ({'; '.join(differences)}): "
                "choose another --output"
            )
        if identity["repeats"] <= recorded.get("repeats", 0):
            return
    output_dir.mkdir(parents=True, exist_ok=True)
    _write_atomically(path, json.dumps(identity, indent=2) + "\n")


def _write_atomically(path: Path, content: str | bytes) -> None:
    """Replace `path` by `content` whole: a kill leaves the old file or the new, never half."""
    data = content.encode("utf-8") if isinstance(content, str) else content
    with tempfile.NamedTemporaryFile(
        "wb", dir=path.parent, prefix=f".{path.name}.", delete=False
    ) as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(file.name, path)


# The fields report and calibrate read from a graded record (an error record needs only `error`).
GRADED_FIELDS = (
    "correct",
    "latency_s",
    "steps",
    "large_steps",
    "small_completion_tokens",
    "large_completion_tokens",
    "small_requests",
    "large_requests",
)


def read_results(output_dir: Path) -> list[dict[str, Any]]:
    """The records of DIR/results.jsonl. A line that is not one (cut by a kill, even inside a
    character; blank; damaged) is skipped, and the lines after it still count; the file is only
    read."""
    path = output_dir / RESULTS_FILE
    if not path.exists():
        return []
    with path.open("rb") as lines:
        return [record for line in lines if (record := parse_record(line)) is not None]


def parse_record(line: bytes) -> dict[str, Any] | None:
    """One line of results.jsonl as a record, or None if it is not a well-formed one."""
    try:
        record = json.loads(line)
    except (ValueError, RecursionError):  # not JSON or not UTF-8; nested past the parser
        return None
    if not isinstance(record, dict):
        return None
    if not isinstance(record.get("problem_id"), str | int) or type(record.get("repeat")) is not int:
        return None
    if not record.get("error") and not all(key in record for key in GRADED_FIELDS):
        return None
    return record


def record_key(record: dict[str, Any]) -> tuple[str, int]:
    return (str(record["problem_id"]), int(record["repeat"]))


class ResultsWriter:
    """Appends one record per line and makes it durable before the next one. It holds an
    exclusive lock on the file while open: a second writer (another eval on the same
    directory) is refused rather than interleaved."""

    def __init__(self, output_dir: Path) -> None:
        output_dir.mkdir(parents=True, exist_ok=True)
        self._file_path = output_dir / RESULTS_FILE
        self._file = self._file_path.open("a+b")
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.close()
            raise ConfigError(
                f"another eval is writing to {output_dir}: wait for it to end, or choose "
                "another --output"
            ) from None
        # After a line cut short by a kill, the next record starts a line of its own.
        self._file.seek(0, os.SEEK_END)
        if self._file.tell():
            self._file.seek(-1, os.SEEK_END)
            self._torn = self._file.read(1) != b"\n"
        else:
            self._torn = False

    def write(self, record: dict[str, Any]) -> None:
        line = encode_record(record)
        if self._torn:
            line, self._torn = b"\n" + line, False
        self._file.write(line)
        self._file.flush()
        os.fsync(self._file.fileno())

    def lines(self) -> list[bytes]:
        """Every line of the file as it stands, torn or damaged ones included."""
        self._file.seek(0)
        return self._file.read().splitlines(keepends=True)

    def replace(self, lines: Sequence[bytes]) -> None:
        """Replace the whole file by `lines` at once (a kill leaves the old file or the new);
        the lock holds until `close`, so no eval writes in between."""
        _write_atomically(self._file_path, b"".join(lines))

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> ResultsWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def encode_record(record: dict[str, Any]) -> bytes:
    """One JSON line; text the model wrote that is not valid Unicode (lone surrogates) is
    escaped rather than failing the write."""
    try:
        return (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
    except UnicodeEncodeError:
        return (json.dumps(record) + "\n").encode("ascii")


def results_dirs(paths: Iterable[Path]) -> list[Path]:
    """Result directories named directly or found one level below (a sweep's root)."""
    found: list[Path] = []
    for path in paths:
        if (path / CONFIG_FILE).exists():
            found.append(path)
        else:
            found.extend(sorted(p.parent for p in path.glob(f"*/{CONFIG_FILE}")))
    if not found:
        raise ConfigError(
            f"no results under {[str(p) for p in paths]}: pass directories written by "
            "glimprouter eval or sweep"
        )
    return found


def realised_large_share(directories: Sequence[Path], dataset: str) -> float:
    """The share of steps the large model wrote in the recorded runs of `dataset` under
    `directories` (what `--large-rate match:DIR` matches)."""
    records = [
        record
        for directory in results_dirs(directories)
        for record in read_results(directory)
        if record.get("dataset") == dataset and not record.get("error")
    ]
    steps = sum(record["steps"] for record in records)
    if not steps:
        raise ConfigError(
            f"no recorded steps of {dataset} under {[str(d) for d in directories]}: match a run "
            "of the same dataset (--large-rate match:DIR)"
        )
    return sum(record["large_steps"] for record in records) / steps
