"""`glimprouter eval | sweep | report | calibrate`: benchmarks from the command line."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from glimprouter.errors import ConfigError
from glimprouter.evals.calibrate import calibrate_threshold, recorded_entropies
from glimprouter.evals.datasets import DATASETS, load_problems
from glimprouter.evals.grading import SandboxLimits
from glimprouter.evals.report import load_rows, markdown, pareto_plot
from glimprouter.evals.runner import Tally, results_dirs, run_eval
from glimprouter.graph.context import RouterContext


def add_eval_commands(
    commands: argparse._SubParsersAction,
    add_context_flags: Callable[[argparse.ArgumentParser], None],
    context_from_args: Callable[[argparse.Namespace], RouterContext],
) -> None:
    """Register eval, sweep, report and calibrate on the top-level parser."""
    evaluate = commands.add_parser("eval", help="run one method over a benchmark")
    _add_run_flags(evaluate, add_context_flags)
    evaluate.set_defaults(handler=lambda args: _eval_command(args, context_from_args))

    sweep = commands.add_parser("sweep", help="run one method at several thresholds")
    _add_run_flags(sweep, add_context_flags)
    sweep.add_argument(
        "--thresholds",
        required=True,
        type=_floats,
        help="comma-separated thresholds, e.g. 0.5,1.0,1.5; each run goes to "
        "OUTPUT/<method>-t<threshold>",
    )
    sweep.set_defaults(handler=lambda args: _sweep_command(args, context_from_args))

    report = commands.add_parser("report", help="tables and Pareto plots of recorded results")
    report.add_argument(
        "dirs", nargs="+", type=Path, help="eval output directories (or a sweep's root)"
    )
    report.add_argument(
        "--plot", type=Path, help="PNG path (default: pareto.png beside the results)"
    )
    report.set_defaults(handler=_report_command)

    calibrate = commands.add_parser(
        "calibrate", help="threshold that sends a target share of steps to the large model"
    )
    calibrate.add_argument(
        "--from",
        dest="dirs",
        nargs="+",
        type=Path,
        required=True,
        help="results of earlier glimprouter runs",
    )
    calibrate.add_argument(
        "--target-large-share",
        type=float,
        required=True,
        help="share of steps the large model should write, e.g. 0.3",
    )
    calibrate.set_defaults(handler=_calibrate_command)


def _add_run_flags(
    parser: argparse.ArgumentParser, add_context_flags: Callable[[argparse.ArgumentParser], None]
) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--dataset", help=f"one of {sorted(DATASETS)}")
    source.add_argument(
        "--data-file",
        type=Path,
        help="a JSONL file with 'problem' and 'answer' fields (graded as math)",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        help="load --dataset from offline files in this folder (e.g. ../shared/data)",
    )
    parser.add_argument(
        "--levels",
        type=lambda text: {int(v) for v in text.split(",")},
        help="MATH levels to keep, e.g. 1,2",
    )
    parser.add_argument("--limit", type=int, help="first N problems only")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=1, help="problems in flight at once")
    parser.add_argument("--output", type=Path, required=True, help="results directory")
    parser.add_argument(
        "--allow-unconfined-code",
        action="store_true",
        help="run code problems' solutions even where the sandbox cannot isolate them (no "
        "namespaces: they can then read your files and reach the network); also "
        "GLIMPROUTER_ALLOW_UNCONFINED_CODE=1",
    )
    add_context_flags(parser)


def _floats(text: str) -> list[float]:
    try:
        return [float(value) for value in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a comma-separated list of numbers: {text!r}"
        ) from None


def _problems(args: argparse.Namespace):
    problems = load_problems(
        args.dataset,
        data_dir=args.data_dir,
        data_file=args.data_file,
        limit=args.limit,
        levels=args.levels,
    )
    if not problems:
        raise ConfigError("no problems selected: check --dataset/--data-file, --levels, --limit")
    return (args.dataset or args.data_file.stem), problems


def _run(problems, context: RouterContext, output: Path, dataset: str, args) -> Tally:
    console = Console(stderr=True)
    with Progress(
        TextColumn(f"{dataset} {context.method}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[figures]}"),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        bar = progress.add_task("run", total=None, figures="")

        def on_record(record: dict[str, Any], tally: Tally, total: int) -> None:
            progress.update(
                bar,
                total=total,
                completed=tally.done,
                figures=(
                    f"acc {100 * tally.accuracy:.1f}%  "
                    f"large steps {100 * tally.large_step_share:.0f}%"
                    + (f"  failed {tally.failed}" if tally.failed else "")
                ),
            )

        tally = asyncio.run(
            run_eval(
                problems,
                context,
                output,
                dataset=dataset,
                repeats=args.repeats,
                concurrency=args.concurrency,
                on_record=on_record,
                limits=SandboxLimits(allow_unconfined=args.allow_unconfined_code),
            )
        )
    console.print(
        f"{output}: {tally.done} new records, accuracy {100 * tally.accuracy:.1f}%, "
        f"{tally.failed} failed"
    )
    return tally


def _eval_command(args, context_from_args) -> int:
    context = context_from_args(args)
    dataset, problems = _problems(args)
    tally = _run(problems, context, args.output, dataset, args)
    return 1 if tally.failed else 0


def _sweep_command(args, context_from_args) -> int:
    context = context_from_args(args)
    dataset, problems = _problems(args)
    failed = 0
    for threshold in args.thresholds:
        run_context = dataclasses.replace(context, threshold=threshold)
        failed += _run(
            problems, run_context, args.output / f"{context.method}-t{threshold:g}", dataset, args
        ).failed
    return 1 if failed else 0


def _report_command(args) -> int:
    directories = results_dirs(args.dirs)
    rows = load_rows(directories)
    print(markdown(rows))
    default_home = (
        Path(*Path(directories[0]).parts[:-1]) if len(directories) > 1 else directories[0]
    )
    plot = pareto_plot(rows, args.plot or default_home / "pareto.png")
    print(f"Pareto plot: {plot}")
    return 0


def _calibrate_command(args) -> int:
    entropies = recorded_entropies(results_dirs(args.dirs))
    threshold, share = calibrate_threshold(entropies, args.target_large_share)
    print(
        f"threshold {threshold:.4f} sends {100 * share:.1f}% of {len(entropies)} recorded steps "
        f"to the large model (target {100 * args.target_large_share:.1f}%)"
    )
    return 0
