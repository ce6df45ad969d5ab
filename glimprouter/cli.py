"""The `glimprouter` command: ask a question, serve a model pair, or run the local demo.

Thin on purpose: it parses flags into a RouterContext and hands over to the graph and the
serving package. Every GlimpRouterError becomes one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from langgraph.graph.state import CompiledStateGraph
from rich.console import Console
from rich.text import Text

from glimprouter.errors import ConfigError, GlimpRouterError
from glimprouter.graph.builder import graph, run_config
from glimprouter.graph.context import MODEL_ROLES, RouterContext, read_key_file
from glimprouter.graph.invoke import output_of, run_question
from glimprouter.graph.state import OutputState
from glimprouter.graph.threads import (
    DURABILITY,
    durable_graph,
    plan_thread,
    thread_config,
    thread_lock,
)
from glimprouter.models import check_endpoints
from glimprouter.prompts import TEMPLATES, render_question
from glimprouter.serving.local_models import cache_dir
from glimprouter.stopping import exit_status, run, sigterm_stops

SAMPLE_QUESTION = (
    "A bakery sells muffins for $3 each and cookies for $2 each. Maya buys 4 muffins and "
    "some cookies and pays $20 in total. How many cookies did she buy?"
)

# Flags that map one-to-one onto RouterContext fields (flag -> field, type, help).
CONTEXT_FLAGS: list[tuple[str, str, type, str]] = [
    ("--small-url", "small_base_url", str, "small model's base URL, e.g. http://127.0.0.1:8001/v1"),
    ("--small-model", "small_model", str, "small model's served name"),
    (
        "--small-api-key",
        "small_api_key",
        str,
        "small model server's API key (shows in ps: prefer --small-api-key-file or "
        "GLIMPROUTER_SMALL_API_KEY)",
    ),
    ("--large-url", "large_base_url", str, "large model's base URL, e.g. http://127.0.0.1:8002/v1"),
    ("--large-model", "large_model", str, "large model's served name"),
    (
        "--large-api-key",
        "large_api_key",
        str,
        "large model server's API key (shows in ps: prefer --large-api-key-file or "
        "GLIMPROUTER_LARGE_API_KEY)",
    ),
    ("--method", "method", str, "routing strategy (default glimprouter; see the README)"),
    ("--threshold", "threshold", float, "glimpse entropy at or above which the large model writes"),
    ("--large-rate", "large_rate", float, "random method: probability of a large step"),
    (
        "--glimpse-mode",
        "glimpse_mode",
        str,
        "stream (default: one request per small step) or probe",
    ),
    ("--top-k", "top_k", int, "top log-probabilities the glimpse entropy is computed over"),
    ("--token-budget", "token_budget", int, "most reasoning tokens over all steps"),
    ("--step-max-tokens", "step_max_tokens", int, "most tokens of one step"),
    ("--max-steps", "max_steps", int, "most reasoning steps"),
    ("--answer-model", "answer_model", str, "model that writes the final answer: small or large"),
    ("--answer-max-tokens", "answer_max_tokens", int, "most tokens of the final answer"),
    ("--temperature", "temperature", float, "sampling temperature of steps and answer"),
    ("--top-p", "top_p", float, "nucleus top-p of steps and answer"),
    ("--seed", "seed", int, "sampling seed sent with every request"),
    ("--request-timeout", "request_timeout", float, "seconds to wait for one model request"),
    ("--max-retries", "max_retries", int, "retries of a failed request"),
]


def add_context_flags(
    parser: argparse.ArgumentParser, parsers: Mapping[str, Callable[[str], Any]] | None = None
) -> None:
    """Routing and endpoint flags; unset flags fall back to GLIMPROUTER_* variables, then
    defaults. `parsers` replaces the value parser of some fields (a command that accepts more,
    such as eval's `--large-rate match:DIR`, resolves those values itself)."""
    group = parser.add_argument_group("routing and endpoints (default: GLIMPROUTER_* or built-in)")
    for flag, field_name, kind, help_text in CONTEXT_FLAGS:
        kind = (parsers or {}).get(field_name, kind)
        group.add_argument(flag, dest=field_name, type=kind, default=None, help=help_text)
    for role in MODEL_ROLES:
        group.add_argument(
            f"--{role}-api-key-file",
            type=Path,
            default=None,
            help=f"file holding the {role} model server's API key (its first line)",
        )


def context_from_args(args: argparse.Namespace) -> RouterContext:
    """A RouterContext from the flags the user gave; an API key given on the command line
    (which every user of the machine sees in ps) is used, with a warning."""
    given = {
        field_name: getattr(args, field_name)
        for _, field_name, _, _ in CONTEXT_FLAGS
        if getattr(args, field_name, None) is not None
    }
    for role in MODEL_ROLES:
        key_file = getattr(args, f"{role}_api_key_file", None)
        if key_file is not None:
            given[f"{role}_api_key"] = read_key_file(key_file, f"--{role}-api-key-file")
        elif f"{role}_api_key" in given:
            print(
                f"glimprouter: warning: --{role}-api-key shows in ps to every user of this "
                f"machine: use --{role}-api-key-file or GLIMPROUTER_{role.upper()}_API_KEY",
                file=sys.stderr,
            )
    return RouterContext(**given)


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
        help="SQLite file of saved chains (default: GLIMPROUTER_CHECKPOINT_DB or "
        "~/.cache/glimprouter/threads.sqlite)",
    )
    add_context_flags(ask)
    ask.set_defaults(handler=_ask_command)

    from glimprouter.serving.cli import add_serving_commands

    add_serving_commands(commands, add_context_flags)

    from glimprouter.evals.cli import add_eval_commands

    add_eval_commands(commands, add_context_flags, context_from_args)

    from glimprouter.endpoint.command import add_router_command

    add_router_command(commands, add_context_flags, context_from_args)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `glimprouter` console script.

    Exit status: 0 done (and a server command stopped by Ctrl-C or SIGTERM), 1 an eval with
    failed problems, 2 an error, 130 / 143 a job stopped by Ctrl-C / SIGTERM (rerun it to
    resume: finished work is kept).
    """
    args = build_parser().parse_args(argv)
    try:
        with sigterm_stops():
            return args.handler(args)
    except GlimpRouterError as error:
        print(f"glimprouter: error: {error}", file=sys.stderr)
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


def default_checkpoint_db() -> Path:
    """Where `ask --thread-id` saves chains unless told otherwise."""
    if env := os.environ.get("GLIMPROUTER_CHECKPOINT_DB"):
        return Path(env)
    return cache_dir() / "threads.sqlite"


async def ask(
    question: str | None,
    context: RouterContext,
    *,
    task: str = "math",
    console: Console | None = None,
    thread_id: str | None = None,
    checkpoint_db: str | Path | None = None,
) -> OutputState:
    """Run the graph on one question, printing each step as it is written when `console` is set.

    With `thread_id` the chain is saved after every step in `checkpoint_db`: asking again under
    the same id resumes it from its last finished step (`question` None resumes only).
    """
    if question is not None:
        render_question(question, task)  # refuse an empty question before contacting a server
    if thread_id is None:
        await check_endpoints(context)
        run_input = {"question": question, "task": task}
        return await _watched_run(graph, run_input, run_config(context), context, console)
    checkpoint_db = checkpoint_db or default_checkpoint_db()
    async with durable_graph(checkpoint_db) as durable, thread_lock(checkpoint_db, thread_id):
        plan = await plan_thread(durable, thread_id, question, task)
        config = thread_config(context, thread_id)
        if plan.state == "finished":
            saved = output_of((await durable.aget_state(config)).values)
            if console is not None:
                console.print(f"thread {thread_id} is finished; its saved result:")
                show_summary(console, saved, 0.0)
            return saved
        await check_endpoints(context)
        if console is not None and plan.state == "unfinished":
            console.print(f"resuming thread {thread_id} after {plan.steps_done} saved steps")
        return await _watched_run(
            durable, plan.run_input, config, context, console, durability=DURABILITY
        )


async def _watched_run(
    runnable: CompiledStateGraph,
    run_input: dict[str, Any] | None,
    config: dict[str, Any],
    context: RouterContext,
    console: Console | None,
    **stream_options: Any,
) -> OutputState:
    def show(event: dict[str, Any]) -> None:
        if console is not None:
            show_event(console, event, context.threshold)

    started = time.perf_counter()
    result = await run_question(
        runnable, run_input, context, config, on_event=show, **stream_options
    )
    if console is not None:
        show_summary(console, result, time.perf_counter() - started)
    return result


def show_event(console: Console, event: dict[str, Any], threshold: float) -> None:
    """One streamed step or the answer, as a user reads it live."""
    if event.get("event") == "step":
        colour = "cyan" if event["model"] == "small" else "magenta"
        console.print(
            f"[bold {colour}]step {event['index']:>3}  {event['model']:<5}[/]  "
            f"{routing_note(event, threshold)}  {event['completion_tokens']} tok  "
            f"{event['wall_s']:.2f} s"
        )
        console.print(model_text(event["text"], style="dim"))
    elif event.get("event") == "answer":
        console.rule(f"answer ({event['model']} model)")
        console.print(model_text(event["text"]))


def routing_note(step: dict[str, Any], threshold: float) -> str:
    """Why the step went to its writer: the glimpse entropy against the threshold, the review
    score of a reviewing method, or nothing for a fixed or random writer."""
    if step.get("entropy") is not None:
        entropy = step["entropy"]
        return f"H={entropy:.3f} ({'>=' if entropy >= threshold else '<'} {threshold:g})"
    if step.get("score") is not None:
        return f"score={step['score']:.3f}"
    return "no glimpse"


def model_text(text: str, style: str = "") -> Text:
    """Model output exactly as written: never read as rich markup (a step may hold `\\[` or
    `[bold]`), and with control characters shown as escapes, so it cannot drive the terminal."""
    visible = "".join(
        char if char in "\n\t" or unicodedata.category(char) != "Cc" else f"\\x{ord(char):02x}"
        for char in text
    )
    return Text(visible, style=style)


def show_summary(console: Console, result: OutputState, seconds: float) -> None:
    steps = result["steps"] or []
    large = sum(step["model"] == "large" for step in steps)
    console.rule()
    final = model_text(str(result["final_answer"]))
    console.print(Text.assemble(("final answer: ", "bold"), final))
    console.print(
        f"{len(steps)} steps ({large} large, {len(steps) - large} small), "
        f"stop: {result['stop_reason']}, {seconds:.1f} s"
    )
    for role, usage in sorted((result["usage"] or {}).items()):
        console.print(
            f"  {role}: {usage['requests']} requests, {usage['prompt_tokens']} prompt + "
            f"{usage['completion_tokens']} completion tokens"
        )


if __name__ == "__main__":
    raise SystemExit(main())
