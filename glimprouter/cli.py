"""The `glimprouter` command: ask a question, serve a model pair, or run the local demo.

Thin on purpose: it parses flags into a RouterContext and hands over to the graph and the
serving package. Every GlimpRouterError becomes one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.markup import escape

from glimprouter.errors import GlimpRouterError
from glimprouter.graph.builder import graph, run_config
from glimprouter.graph.context import RouterContext
from glimprouter.graph.state import OutputState
from glimprouter.models import check_endpoints
from glimprouter.prompts import TEMPLATES, render_question

SAMPLE_QUESTION = (
    "A bakery sells muffins for $3 each and cookies for $2 each. Maya buys 4 muffins and "
    "some cookies and pays $20 in total. How many cookies did she buy?"
)

# Flags that map one-to-one onto RouterContext fields (flag -> field, type, help).
CONTEXT_FLAGS: list[tuple[str, str, type, str]] = [
    ("--small-url", "small_base_url", str, "small model's base URL, e.g. http://127.0.0.1:8001/v1"),
    ("--small-model", "small_model", str, "small model's served name"),
    ("--small-api-key", "small_api_key", str, "small model server's API key"),
    ("--large-url", "large_base_url", str, "large model's base URL, e.g. http://127.0.0.1:8002/v1"),
    ("--large-model", "large_model", str, "large model's served name"),
    ("--large-api-key", "large_api_key", str, "large model server's API key"),
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


def add_context_flags(parser: argparse.ArgumentParser) -> None:
    """Routing and endpoint flags; unset flags fall back to GLIMPROUTER_* variables, then
    defaults."""
    group = parser.add_argument_group("routing and endpoints (default: GLIMPROUTER_* or built-in)")
    for flag, field_name, kind, help_text in CONTEXT_FLAGS:
        group.add_argument(flag, dest=field_name, type=kind, default=None, help=help_text)


def context_from_args(args: argparse.Namespace) -> RouterContext:
    """A RouterContext from the flags the user gave."""
    given = {
        field_name: getattr(args, field_name)
        for _, field_name, _, _ in CONTEXT_FLAGS
        if getattr(args, field_name, None) is not None
    }
    return RouterContext(**given)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="glimprouter",
        description="Route a chain of thought between a small and a large model by glimpsing "
        "one token (arXiv 2601.05110).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    ask = commands.add_parser("ask", help="answer one question, showing each routed step")
    ask.add_argument("question", help="the question to reason about")
    ask.add_argument("--task", default="math", choices=sorted(TEMPLATES), help="prompt family")
    ask.add_argument(
        "--json", action="store_true", help="print only the result, as one JSON object"
    )
    add_context_flags(ask)
    ask.set_defaults(handler=_ask_command)

    from glimprouter.serving.cli import add_serving_commands

    add_serving_commands(commands, add_context_flags)

    from glimprouter.evals.cli import add_eval_commands

    add_eval_commands(commands, add_context_flags, context_from_args)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `glimprouter` console script."""
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except GlimpRouterError as error:
        print(f"glimprouter: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("glimprouter: interrupted", file=sys.stderr)
        return 130


def _ask_command(args: argparse.Namespace) -> int:
    context = context_from_args(args)
    console = None if args.json else Console(highlight=False)
    result = asyncio.run(ask(args.question, context, task=args.task, console=console))
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
    return 0


async def ask(
    question: str,
    context: RouterContext,
    *,
    task: str = "math",
    console: Console | None = None,
) -> OutputState:
    """Run the graph on one question, printing each step as it is written when `console` is set."""
    render_question(question, task)  # refuse an empty question before contacting any server
    await check_endpoints(context)
    started = time.perf_counter()
    final: dict[str, Any] = {}
    async for mode, chunk in graph.astream(
        {"question": question, "task": task},
        context=context,
        config=run_config(context),
        stream_mode=["custom", "values"],
    ):
        if mode == "values":
            final = chunk
        elif console is not None:
            show_event(console, chunk, context.threshold)
    result: OutputState = {key: final.get(key) for key in OutputState.__annotations__}  # type: ignore[assignment]
    if console is not None:
        show_summary(console, result, time.perf_counter() - started)
    return result


def show_event(console: Console, event: dict[str, Any], threshold: float) -> None:
    """One streamed step or the answer, as a user reads it live."""
    if event.get("event") == "step":
        colour = "cyan" if event["model"] == "small" else "magenta"
        console.print(
            f"[bold {colour}]step {event['index']:>3}  {event['model']:<5}[/]  "
            f"H={event['entropy']:.3f} ({'>=' if event['entropy'] >= threshold else '<'} "
            f"{threshold:g})  {event['completion_tokens']} tok  {event['wall_s']:.2f} s"
        )
        console.print(escape(event["text"]), style="dim")
    elif event.get("event") == "answer":
        console.rule(f"answer ({event['model']} model)")
        console.print(escape(event["text"]))


def show_summary(console: Console, result: OutputState, seconds: float) -> None:
    steps = result["steps"] or []
    large = sum(step["model"] == "large" for step in steps)
    console.rule()
    console.print(f"[bold]final answer:[/] {escape(str(result['final_answer']))}")
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
