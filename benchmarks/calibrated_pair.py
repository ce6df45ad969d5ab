"""The honest comparison on a served pair: calibrate GlimpRouter's threshold on a dev split of
MATH-500 levels 1-2, then run small-only, large-only, GlimpRouter at that threshold and random
routing at GlimpRouter's realised large-step share on the test split, and report them paired.

    python benchmarks/calibrated_pair.py [--pair SMALL,LARGE | --small-url URL --large-url URL] \
        [--target-large-share 0.3] [--token-budget 128] [--concurrency 8] [--output DIR]

Serves the local pair `--pair` (one core each, as `glimprouter serve --local` does) unless both
URLs are given.

Every run is a `glimprouter` command (printed before it runs), so a rerun resumes where a stopped
one left off. The report is `glimprouter report --against large-only`'s tables.
"""

from __future__ import annotations

import argparse
import contextlib
import shlex
import subprocess
import sys
from pathlib import Path

from _record import record

from glimprouter.evals.report import load_rows, markdown, matched_markdown, paired_markdown
from glimprouter.evals.results import results_dirs
from glimprouter.vllm_launcher.local_models import LOCAL_MODELS, LOCAL_PAIR
from glimprouter.vllm_launcher.pair import local_pair_specs, serve


def glimprouter(*args: str) -> None:
    """Run one `glimprouter` command, shown first."""
    print("$ glimprouter " + shlex.join(args), flush=True)
    subprocess.run([sys.executable, "-m", "glimprouter.cli", *args], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--pair", default=",".join(LOCAL_PAIR), help=f"small,large among {sorted(LOCAL_MODELS)}"
    )
    parser.add_argument("--small-url", help="a running small server (with --large-url)")
    parser.add_argument("--large-url", help="a running large server (with --small-url)")
    parser.add_argument("--target-large-share", type=float, default=0.3)
    parser.add_argument("--dev-threshold", type=float, default=1.0)
    parser.add_argument("--token-budget", type=int, default=128)
    parser.add_argument("--step-max-tokens", type=int, default=64)
    parser.add_argument("--answer-max-tokens", type=int, default=32)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--limit", type=int, help="first N test problems only")
    parser.add_argument("--output", type=Path, default=Path("runs/calibrated-pair"))
    parser.add_argument(
        "--data-dir", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data"
    )
    args = parser.parse_args()
    if (args.small_url is None) != (args.large_url is None):
        parser.error("give both --small-url and --large-url, or neither to serve --pair")
    args.served = args.pair if args.small_url is None else f"{args.small_url}, {args.large_url}"
    with contextlib.ExitStack() as stack:
        if args.small_url is None:
            pair = tuple(args.pair.split(","))
            small, large = stack.enter_context(serve(local_pair_specs(pair=pair)))
            args.small_url, args.large_url = small.base_url, large.base_url
        run_methods(args)
    report(args)


def run_methods(args: argparse.Namespace) -> None:
    """The dev run and calibration, then the four methods on the test split."""
    common = [
        "--dataset", "math500", "--data-dir", str(args.data_dir), "--levels", "1,2",
        "--small-url", args.small_url, "--large-url", args.large_url,
        "--token-budget", str(args.token_budget), "--step-max-tokens", str(args.step_max_tokens),
        "--answer-max-tokens", str(args.answer_max_tokens), "--seed", "0",
        "--concurrency", str(args.concurrency),
        *(["--limit", str(args.limit)] if args.limit else []),
    ]  # fmt: skip
    sweep = args.output / "glimprouter"
    glimprouter(
        "sweep", *common, "--method", "glimprouter", "--threshold", str(args.dev_threshold),
        "--calibrate-on-dev", "--target-large-shares", str(args.target_large_share),
        "--output", str(sweep),
    )  # fmt: skip
    share = f"share{args.target_large_share:g}"
    (glimpse_run,) = [
        d for d in results_dirs([sweep]) if d.name.startswith(f"glimprouter-{share}-")
    ]
    test = [*common, "--split", "test"]
    glimprouter(
        "eval", *test, "--method", "random", "--large-rate", f"match:{glimpse_run}",
        "--output", str(args.output / f"random-{share}"),
    )  # fmt: skip
    for method in ("large-only", "small-only"):
        glimprouter("eval", *test, "--method", method, "--output", str(args.output / method))


def report(args: argparse.Namespace) -> None:
    # One level below the sweep's root: its test runs, not its dev run (in dev/).
    rows = load_rows(results_dirs([args.output, args.output / "glimprouter"]))
    lines = [
        markdown(rows),
        paired_markdown(rows, "large-only"),
        matched_markdown(rows),
        "",
        f"Pair (small, large): {args.served}. "
        f"MATH-500 levels 1-2, test split (dev fraction 0.2, split seed 0); threshold "
        f"calibrated on the dev split's glimpse entropies for a {args.target_large_share:.0%} "
        f"large share (dev run at threshold {args.dev_threshold:g}). Token budget "
        f"{args.token_budget}, steps of at most {args.step_max_tokens} tokens, answer "
        f"{args.answer_max_tokens} tokens, seed 0, concurrency {args.concurrency}, one method "
        "at a time, on the same two servers.",
    ]
    record("Calibrated on dev, reported on test: the local pair on MATH-500 level 1-2", lines)


if __name__ == "__main__":
    main()
