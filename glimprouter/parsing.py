"""Reading model output: how a step ended, and the final answer inside it."""

from __future__ import annotations

from glimprouter.graph.state import StepFinish
from glimprouter.prompts import STEP_SEPARATOR

BOXED_COMMANDS = ("\\boxed", "\\fbox")


def split_step(
    text: str, finish_reason: str | None, separator: str = STEP_SEPARATOR
) -> tuple[str, StepFinish]:
    """The step text without its separator, and whether it ended at the separator, EOS or length.

    Steps are requested with the separator kept in the output (vLLM's
    include_stop_str_in_output) because finish_reason "stop" is the same for a stop string and
    for end-of-sequence: a "stop" output that ends with the separator stopped there, any other
    "stop" is the model's own end.
    """
    if finish_reason == "length":
        return text, "length"
    if text.endswith(separator):
        return text[: -len(separator)], "separator"
    return text, "end_of_sequence"


def last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} (or \\fbox{...}) in `text`, nested braces included."""
    start = max(text.rfind(command + "{") for command in BOXED_COMMANDS)
    if start < 0:
        return None
    open_brace = text.index("{", start)
    depth = 0
    for position in range(open_brace, len(text)):
        char = text[position]
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return text[open_brace + 1 : position].strip()
    return None
