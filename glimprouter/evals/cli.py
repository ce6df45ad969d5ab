"""`glimprouter eval | sweep | regrade | report | calibrate`: benchmarks from the command
line."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from glimprouter.context_flags import add_context_flags, context_from_args
from glimprouter.errors import ConfigError
from glimprouter.evals.calibrate import calibrate_threshold, recorded_entropies
from glimprouter.evals.config_file import CONFIG_FLAG
from glimprouter.evals.datasets import (
    DATASETS,
    DEFAULT_DEV_FRACTION,
    SPLITS,
    Problem,
    load_problems,
    split_problems,
)
from glimprouter.evals.ray_cluster import INSTALL, LOCAL, RayCluster, connected
from glimprouter.evals.regrade_command import (
    add_grading_flags,
    add_regrade_command,
    grading_limits,
)
from glimprouter.evals.results import realised_large_share, results_dirs
from glimprouter.evals.runner import Tally, run_eval
from glimprouter.extras import require
from glimprouter.graph.context import RouterContext
from glimprouter.stopping import run

MATCH = "match:"
RUN_COMMANDS = ("eval", "sweep")  # the commands that take --config


@dataclasses.dataclass(frozen=True)
class MatchedRate:
    """`--large-rate match:DIR`: the large-step share a recorded run realised."""

    source: Path


def large_rate(text: str) -> float | MatchedRate:
    """A probability, or `match:DIR` for the share of large steps recorded under DIR."""
    if text.startswith(MATCH):
        return MatchedRate(Path(text.removeprefix(MATCH)))
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a probability nor {MATCH}DIR: {text!r}") from None


def add_eval_commands(commands: argparse._SubParsersAction) -> None:
    """Register eval, sweep, regrade, report and calibrate on the top-level parser."""
    evaluate = commands.add_parser("eval", help="run one method over a benchmark")
    _add_run_flags(evaluate)
    evaluate.set_defaults(handler=_eval_command)

    sweep = commands.add_parser(
        "sweep",
        help="run one method at several thresholds, or at thresholds calibrated on a dev split",
    )
    _add_run_flags(sweep)
    sweep.add_argument(
        "--thresholds",
        type=_floats,
        help="comma-separated thresholds, e.g. 0.5,1.0,1.5; each run goes to "
        "OUTPUT/<method>-t<threshold>",
    )
    sweep.add_argument(
        "--calibrate-on-dev",
        action="store_true",
        help="run glimprouter on the dev split (at --threshold), pick the threshold of each "
        "--target-large-shares value from its glimpse entropies, then run those on the test "
        "split; the dev run goes to OUTPUT/dev/, the test runs to OUTPUT/<method>-t<threshold>",
    )
    sweep.add_argument(
        "--target-large-shares",
        type=_floats,
        help="with --calibrate-on-dev: shares of steps the large model should write, e.g. 0.2,0.3",
    )
    sweep.set_defaults(handler=_sweep_command)

    add_regrade_command(commands)

    report = commands.add_parser("report", help="tables and Pareto plots of recorded results")
    report.add_argument(
        "dirs", nargs="+", type=Path, help="eval output directories (or a sweep's root)"
    )
    report.add_argument(
        "--plot", type=Path, help="PNG path (default: pareto.png beside the results)"
    )
    report.add_argument(
        "--against",
        metavar="METHOD",
        help="also compare every run with this one (a method, e.g. large-only, or a label such "
        "as 'glimprouter t=1') on the same problems: paired intervals and p-values",
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
        help="results of earlier glimprouter runs (ideally on a dev split)",
    )
    calibrate.add_argument(
        "--target-large-share",
        type=float,
        required=True,
        help="share of steps the large model should write, e.g. 0.3",
    )
    calibrate.set_defaults(handler=_calibrate_command)


def _add_run_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        CONFIG_FLAG,
        metavar="FILE",
        help="JSON or TOML file of flags and settings by name (threshold, small_base_url, ...) "
        "or the reference code's config.json keys; flags on the command line win",
    )
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
    parser.add_argument(
        "--split",
        choices=SPLITS,
        help="run only the dev or the test part of a deterministic split of the problems (before "
        "--limit); calibrate on dev, report on test",
    )
    parser.add_argument(
        "--dev-fraction",
        type=float,
        default=DEFAULT_DEV_FRACTION,
        help=f"share of the problems in the dev split (default {DEFAULT_DEV_FRACTION:g})",
    )
    parser.add_argument("--split-seed", type=int, default=0, help="seed of the split (default 0)")
    parser.add_argument("--limit", type=int, help="first N problems only")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=1, help="problems in flight at once")
    parser.add_argument("--output", type=Path, required=True, help="results directory")
    parser.add_argument(
        "--ray",
        nargs="?",
        const=LOCAL,
        metavar="ADDRESS",
        help="spread the problems over a Ray cluster: no address starts one on this machine, "
        "'auto' joins the one `ray start` runs here, or a cluster's address; --concurrency is "
        f"then per worker (needs {INSTALL})",
    )
    parser.add_argument(
        "--ray-workers",
        type=int,
        help="Ray workers (one CPU each) with --ray (default: one per CPU of the cluster)",
    )
    add_grading_flags(parser)
    add_context_flags(parser, parsers={"large_rate": large_rate})


def _floats(text: str) -> list[float]:
    try:
        return [float(value) for value in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a comma-separated list of numbers: {text!r}"
        ) from None


def _problems(args: argparse.Namespace, split: str | None) -> tuple[str, list[Problem], dict]:
    """The dataset's label, its selected problems, and how they were selected (for the run's
    pinned configuration)."""
    problems = load_problems(
        args.dataset, data_dir=args.data_dir, data_file=args.data_file, levels=args.levels
    )
    selection: dict[str, Any] = {}
    if split is not None:
        problems = split_problems(problems, split, args.dev_fraction, args.split_seed)
        selection = {
            "split": split,
            "dev_fraction": args.dev_fraction,
            "split_seed": args.split_seed,
        }
    problems = problems if args.limit is None else problems[: args.limit]
    if not problems:
        raise ConfigError(
            "no problems selected: check --dataset/--data-file, --levels, --split, --limit"
        )
    return (args.dataset or args.data_file.stem), problems, selection


def _context(args: argparse.Namespace, dataset: str) -> tuple[RouterContext, dict[str, Any]]:
    """The run's settings; a matched --large-rate becomes the share it names, recorded with
    its source."""
    rate = args.large_rate
    if not isinstance(rate, MatchedRate):
        return context_from_args(args), {}
    args = argparse.Namespace(
        **{**vars(args), "large_rate": realised_large_share([rate.source], dataset)}
    )
    return context_from_args(args), {"large_rate_matched_from": str(rate.source)}


def _run(
    problems, context: RouterContext, output: Path, dataset: str, args, selection: dict
) -> Tally:
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
            if record.get("error"):
                # Printed as it happens: the summary only counts, and a rerun retries it.
                progress.console.print(
                    Text(f"failed {record['problem_id']} (repeat {record['repeat']}): ")
                    + Text(record["error"])
                )
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

        tally = run(
            run_eval(
                problems,
                context,
                output,
                dataset=dataset,
                repeats=args.repeats,
                concurrency=args.concurrency,
                selection=selection,
                on_record=on_record,
                limits=grading_limits(args),
                cluster=_cluster(args),
            )
        )
    console.print(
        f"{output}: {tally.done} new records, accuracy {100 * tally.accuracy:.1f}%, "
        f"{tally.failed} failed"
        + (" (the same command run again retries them)" if tally.failed else "")
        + (
            f", {tally.ungraded} ungraded, counted wrong (glimprouter regrade {output} grades "
            "them again)"
            if tally.ungraded
            else ""
        ),
        highlight=False,
    )
    return tally


def _cluster(args: argparse.Namespace) -> RayCluster | None:
    if args.ray is None:
        if args.ray_workers is not None:
            raise ConfigError("--ray-workers needs --ray")
        return None
    return RayCluster(args.ray, args.ray_workers)


def _eval_command(args: argparse.Namespace) -> int:
    dataset, problems, selection = _problems(args, args.split)
    context, matched = _context(args, dataset)
    tally = _run(problems, context, args.output, dataset, args, selection | matched)
    return 1 if tally.failed else 0


def _sweep_command(args: argparse.Namespace) -> int:
    with connected(_cluster(args)):  # one Ray cluster for every run of the sweep
        return _sweep(args)


def _sweep(args: argparse.Namespace) -> int:
    if args.calibrate_on_dev:
        return _calibrated_sweep(args)
    if args.thresholds is None or args.target_large_shares is not None:
        raise ConfigError(
            "sweep needs --thresholds, or --calibrate-on-dev with --target-large-shares"
        )
    dataset, problems, selection = _problems(args, args.split)
    context, matched = _context(args, dataset)
    failed = 0
    for threshold in args.thresholds:
        run_context = dataclasses.replace(context, threshold=threshold)
        output = args.output / f"{context.method}-t{threshold:g}"
        failed += _run(problems, run_context, output, dataset, args, selection | matched).failed
    return 1 if failed else 0


def _calibrated_sweep(args: argparse.Namespace) -> int:
    """Calibrate thresholds on the dev split, then run them on the test split."""
    if args.target_large_shares is None or args.thresholds is not None or args.split:
        raise ConfigError(
            "--calibrate-on-dev takes --target-large-shares (not --thresholds or --split): it "
            "runs the dev split, then the test split"
        )
    dataset, dev_problems, dev_selection = _problems(args, "dev")
    context, matched = _context(args, dataset)
    if context.method != "glimprouter":
        raise ConfigError(
            f"--calibrate-on-dev calibrates glimpse entropies: use --method glimprouter, not "
            f"{context.method!r}"
        )
    dev_output = args.output / "dev" / f"{context.method}-t{context.threshold:g}"
    failed = _run(dev_problems, context, dev_output, dataset, args, dev_selection | matched).failed
    entropies = recorded_entropies([dev_output])
    _, test_problems, test_selection = _problems(args, "test")
    for target in args.target_large_shares:
        threshold, share = calibrate_threshold(entropies, target)
        print(
            f"target large share {100 * target:.1f}%: threshold {threshold:.4f} "
            f"({100 * share:.1f}% of {len(entropies)} dev steps)",
            flush=True,
        )
        selection = test_selection | {
            "calibrated_on": str(dev_output),
            "target_large_share": target,
        }
        run_context = dataclasses.replace(context, threshold=threshold)
        output = args.output / f"{context.method}-share{target:g}-t{threshold:.4g}"
        failed += _run(test_problems, run_context, output, dataset, args, selection).failed
    print(f"report the test runs with: glimprouter report {args.output}", flush=True)
    return 1 if failed else 0


def _report_command(args) -> int:
    report = require("glimprouter.evals.report")  # scipy and matplotlib: the [evals] extra
    directories = results_dirs(args.dirs)
    rows = report.load_rows(directories)
    print(report.markdown(rows))
    if args.against:
        print(report.paired_markdown(rows, args.against))
    if matched := report.matched_markdown(rows):
        print(matched)
    default_home = (
        Path(*Path(directories[0]).parts[:-1]) if len(directories) > 1 else directories[0]
    )
    plot = report.pareto_plot(rows, args.plot or default_home / "pareto.png")
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
