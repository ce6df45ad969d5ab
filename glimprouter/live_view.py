"""What a user watches while a chain runs: each step with its writer and why, then the answer
and a summary. Model text is shown exactly as written and can never drive the terminal."""

from __future__ import annotations

import unicodedata
from typing import Any

from rich.console import Console
from rich.text import Text

from glimprouter.graph.state import OutputState


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
