"""`glimprouter regrade RUN`, and the grading flags it shares with eval and sweep (one
declaration each)."""

from __future__ import annotations

import argparse
from pathlib import Path

from glimprouter.evals.grading import SandboxLimits
from glimprouter.evals.grading.math_grader import VERIFY_TIMEOUT_S
from glimprouter.evals.regrade import regrade_run
from glimprouter.stopping import run


def add_regrade_command(commands: argparse._SubParsersAction) -> None:
    """Register regrade on the top-level parser."""
    regrade = commands.add_parser(
        "regrade",
        help="grade a run's records again from their kept answers and chains (after a grader "
        "fix, or with a longer --grade-timeout), asking no model",
    )
    regrade.add_argument("run", type=Path, metavar="RUN", help="an eval's --output directory")
    regrade.add_argument(
        "--data-dir", type=Path, help="where a code dataset's tests load from, as for eval"
    )
    add_grading_flags(regrade)
    regrade.set_defaults(handler=_regrade_command)


def _regrade_command(args: argparse.Namespace) -> int:
    done = run(regrade_run(args.run, grading_limits(args), args.data_dir))
    print(
        f"{args.run}: {done.graded} records regraded, {done.changed} grades changed, correct "
        f"{done.correct_before} -> {done.correct_after}, {done.ungraded} ungraded"
    )
    return 0


def add_grading_flags(parser: argparse.ArgumentParser) -> None:
    """How answers are graded: by eval and sweep as they run, by regrade afterwards."""
    parser.add_argument(
        "--allow-unconfined-code",
        action="store_true",
        help="run code problems' solutions even where the sandbox cannot isolate them (no "
        "namespaces: they can then read your files and reach the network); also "
        "GLIMPROUTER_ALLOW_UNCONFINED_CODE=1",
    )
    parser.add_argument(
        "--grade-timeout",
        type=_grade_timeout,
        metavar="SECONDS",
        help=f"CPU seconds math-verify may spend on one answer (default {VERIFY_TIMEOUT_S:g}); "
        "an answer it cannot finish is graded false and kept as ungraded",
    )


def _grade_timeout(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = 0.0
    if not seconds > 0:
        raise argparse.ArgumentTypeError(f"--grade-timeout takes seconds above 0, not {text!r}")
    return seconds


def grading_limits(args: argparse.Namespace) -> SandboxLimits:
    """The graders' limits the flags of `add_grading_flags` set."""
    return SandboxLimits(
        allow_unconfined=args.allow_unconfined_code, grade_timeout_s=args.grade_timeout
    )
