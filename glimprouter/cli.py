"""The `glimprouter` command: ask a question, serve a model pair, or run the local demo.

Thin on purpose: it parses flags into a RouterContext and hands over to the graph and the
vLLM launcher. Every GlimpRouterError becomes one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from rich.console import Console

from glimprouter.ask import ask
from glimprouter.context_flags import add_context_flags, context_from_args
from glimprouter.endpoint.command import add_router_command
from glimprouter.errors import ConfigError, GlimpRouterError
from glimprouter.evals.cli import RUN_COMMANDS, add_eval_commands
from glimprouter.evals.config_file import expand_config
from glimprouter.extras import missing_extra
from glimprouter.prompts import TEMPLATES
from glimprouter.stopping import exit_status, run, sigterm_stops
from glimprouter.threads_command import add_threads_command
from glimprouter.vllm_launcher.cli import add_serving_commands


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="glimprouter",
        description="Route a chain of thought between a small and a large model by glimpsing "
        "one token (arXiv 2601.05110).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    ask = commands.add_parser("ask", help="answer one question, showing each routed step")
    ask.add_argument(
        "question",
        nargs="?",
        help="the question to reason about (leave it out to resume --thread-id)",
    )
    ask.add_argument("--task", default="math", choices=sorted(TEMPLATES), help="prompt family")
    ask.add_argument(
        "--json", action="store_true", help="print only the result, as one JSON object"
    )
    ask.add_argument(
        "--thread-id",
        help="save the chain after every step under this id; run again to resume it",
    )
    ask.add_argument(
        "--checkpoint-db",
        default=None,
        help="where saved chains live: a SQLite file, or a PostgreSQL URI postgresql://... that "
        "several machines share (default: GLIMPROUTER_CHECKPOINT_DB or "
        "~/.cache/glimprouter/threads.sqlite)",
    )
    add_context_flags(ask)
    ask.set_defaults(handler=_ask_command)

    add_serving_commands(commands)
    add_eval_commands(commands)
    add_router_command(commands)
    add_threads_command(commands)
    parser.commands = commands.choices  # each command's parser, which --config expands against
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `glimprouter` console script.

    Exit status: 0 done (and a server command stopped by Ctrl-C or SIGTERM), 1 an eval with
    failed problems, 2 an error, 130 / 143 a job stopped by Ctrl-C / SIGTERM (rerun it to
    resume: finished work is kept).
    """
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] in RUN_COMMANDS:
            argv = expand_config(parser.commands[argv[0]], argv)
        args = parser.parse_args(argv)
        with sigterm_stops():
            return args.handler(args)
    except GlimpRouterError as error:
        print(f"glimprouter: error: {error}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as error:  # a package of an extra, imported by a library between
        if (missing := missing_extra(error)) is None:
            raise
        print(f"glimprouter: error: {missing}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as interrupt:
        print(f"glimprouter: stopped ({interrupt or 'Ctrl-C'})", file=sys.stderr)
        return exit_status(interrupt)


def _ask_command(args: argparse.Namespace) -> int:
    if args.question is None and args.thread_id is None:
        raise ConfigError("give a question, or --thread-id to resume a saved chain")
    context = context_from_args(args)
    console = None if args.json else Console(highlight=False)
    result = run(
        ask(
            args.question,
            context,
            task=args.task,
            console=console,
            thread_id=args.thread_id,
            checkpoint_db=args.checkpoint_db,
        )
    )
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
    if result.get("error"):
        resume = " (run the same command again to resume)" if args.thread_id else ""
        print(f"glimprouter: error: {result['error']}{resume}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
