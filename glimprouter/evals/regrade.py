"""`glimprouter regrade RUN`: grade a run's kept records again (after a grader fix, or with a
longer `--grade-timeout`) from the answers and chains they hold, without any model request.

Only the grade fields of a record change (`solve.GRADE_FIELDS`); records of failed runs (no
answer to grade) and lines that are not records stay byte for byte as they were. The run's
lock is held throughout, so no eval writes to the directory meanwhile.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path
from typing import Any

from glimprouter.errors import ConfigError
from glimprouter.evals.datasets import DATASETS, Problem, load_problems
from glimprouter.evals.grading import SandboxLimits
from glimprouter.evals.grading.math_grader import MAX_WORKERS, stop_workers
from glimprouter.evals.grading.sandbox import DEFAULT_LIMITS, check_sandbox
from glimprouter.evals.results import CONFIG_FILE, ResultsWriter, encode_record, parse_record
from glimprouter.evals.solve import graded_record
from glimprouter.prompts import STEP_SEPARATOR


@dataclasses.dataclass(frozen=True)
class Regraded:
    """What a regrade changed: records graded, correct before and after, grades that changed,
    answers still ungraded."""

    graded: int
    correct_before: int
    correct_after: int
    changed: int
    ungraded: int


async def regrade_run(
    run_dir: Path, limits: SandboxLimits = DEFAULT_LIMITS, data_dir: Path | None = None
) -> Regraded:
    """Grade again every graded record of `run_dir`; `data_dir` is where a code dataset's
    problems (their tests) load from, as for `eval --data-dir`."""
    config_path = run_dir / CONFIG_FILE
    if not config_path.exists():
        raise ConfigError(f"{run_dir} holds no eval run ({CONFIG_FILE}): pass an --output of eval")
    config = json.loads(config_path.read_text())
    # A run pinned before step_separator joined the identity wrote its steps at the default.
    dataset, separator = config["dataset"], config.get("step_separator", STEP_SEPARATOR)
    with ResultsWriter(run_dir) as writer:
        lines = writer.lines()
        records = [parse_record(line) for line in lines]
        gradable = [i for i, r in enumerate(records) if r is not None and not r.get("error")]
        problems = _problems(dataset, [records[i] for i in gradable], data_dir)
        if any(problem.task == "code" for problem in problems):
            await check_sandbox(limits)
        slots = asyncio.Semaphore(MAX_WORKERS)

        async def one(index: int, problem: Problem) -> dict[str, Any]:
            async with slots:
                return await graded_record(problem, records[index], limits, separator)

        try:
            regraded = await asyncio.gather(
                *(one(i, p) for i, p in zip(gradable, problems, strict=True))
            )
        finally:
            stop_workers()
        new_lines = list(lines)
        for index, record in zip(gradable, regraded, strict=True):
            new_lines[index] = encode_record(record)
        writer.replace(new_lines)
    before = [records[i] for i in gradable]
    return Regraded(
        graded=len(regraded),
        correct_before=sum(bool(r["correct"]) for r in before),
        correct_after=sum(bool(r["correct"]) for r in regraded),
        changed=sum(_grade(old) != _grade(new) for old, new in zip(before, regraded, strict=True)),
        ungraded=sum("grading" in r for r in regraded),
    )


def _grade(record: dict[str, Any]) -> tuple[Any, ...]:
    return (record["correct"], record.get("extracted_answer"), record.get("grading"))


def _problems(dataset: str, records: list[dict[str, Any]], data_dir: Path | None) -> list[Problem]:
    """The problem of each record, as its grader needs it: math and multiple choice from what
    the record holds (its gold answer), code from the dataset (its tests)."""
    default_task = DATASETS[dataset].task if dataset in DATASETS else "math"  # else a data file
    tasks = [record.get("task", default_task) for record in records]
    by_id: dict[str, Problem] = {}
    if "code" in tasks:
        by_id = {p.id: p for p in load_problems(dataset, data_dir=data_dir)}
    problems = []
    for record, task in zip(records, tasks, strict=True):
        problem_id = str(record["problem_id"])
        if task == "code":
            if problem_id not in by_id:
                raise ConfigError(
                    f"{dataset} has no problem {problem_id!r} to regrade: give the --data-dir "
                    "the run was made from"
                )
            problems.append(by_id[problem_id])
        else:
            problems.append(Problem(dataset, problem_id, "", task, str(record["gold_answer"])))
    return problems
