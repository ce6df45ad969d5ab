"""Run both notebooks against served models and store them with their outputs, so that a reader
on GitHub sees a real run without running anything. The tests execute the notebooks in memory
against their own server and never write them back.

    glimprouter serve --local &        # the local pair; GLIMPROUTER_* settings point elsewhere
    GLIMPROUTER_TOKEN_BUDGET=192 python scripts/store_notebooks.py --results 'runs/pair/*'
    python scripts/store_notebooks.py quickstart        # one of them

The quickstart runs with the GLIMPROUTER_* settings of this environment; the analysis notebook
reads --results (directories or glob patterns, as GLIMPROUTER_RESULTS) and compares them with
--against.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
CELL_TIMEOUT_S = 1800


def store(name: str, settings: dict[str, str]) -> Path:
    """Execute notebooks/NAME.ipynb from its folder with `settings` added to the environment,
    and write it back with its outputs (no timings: a rerun changes only what the run did)."""
    path = NOTEBOOKS / f"{name}.ipynb"
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT_S,
        record_timing=False,
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    ).execute(env=os.environ | settings)
    nbformat.write(notebook, path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "notebooks",
        nargs="*",
        choices=["quickstart", "analysis"],
        default=["quickstart", "analysis"],
        help="which to run and store (default both)",
    )
    parser.add_argument(
        "--results",
        help="for analysis: result directories or glob patterns, separated by ':'",
    )
    parser.add_argument("--against", default="large-only", help="the paired tables' reference")
    args = parser.parse_args()
    if "analysis" in args.notebooks and not args.results:
        parser.error("the analysis notebook needs --results DIR_OR_PATTERN[:...]")
    for name in args.notebooks:
        settings = {}
        if name == "analysis":
            patterns = [str(Path(p).resolve()) for p in args.results.split(os.pathsep)]
            settings = {"GLIMPROUTER_RESULTS": os.pathsep.join(patterns)}
            settings["GLIMPROUTER_AGAINST"] = args.against
        print(store(name, settings), flush=True)


if __name__ == "__main__":
    main()
