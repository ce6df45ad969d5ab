"""What the router's requests ask of a model server, known to both the client that talks to a
running server and the launcher that starts one: the continuation flags, the assistant prefixes
it continues, how a rendering of one is judged, and the context its longest request needs."""

from __future__ import annotations

from typing import Literal

from glimprouter.prompts import THINK_CLOSE, answer_prefix, thinking_prefix

# vLLM continues the final assistant message verbatim only with both flags (the generation
# prompt defaults to on and may not be combined with continuation). The stop string is kept in
# the output so a separator stop can be told apart from end-of-sequence.
CONTINUATION = {
    "continue_final_message": True,
    "add_generation_prompt": False,
    "include_stop_str_in_output": True,
}

Behaviour = Literal["verbatim", "wraps", "strips"]

_PROBE_STEPS = ["Two and two make four."]

PROBE_PREFIXES = (thinking_prefix(_PROBE_STEPS), answer_prefix(_PROBE_STEPS))
"""The two kinds of prefix the router continues: mid-thinking, and closed for the answer."""


def judge_rendering(prefix: str, rendered: str | None) -> Behaviour:
    """What a template did to a continued `prefix`, from the prompt it rendered (None: the
    renderer refused, as transformers does when the final message vanished)."""
    if rendered is None or not rendered.endswith(prefix):
        return "strips"
    if rendered.count(THINK_CLOSE) > prefix.count(THINK_CLOSE):
        return "wraps"
    return "verbatim"


PROMPT_ALLOWANCE = 2048
"""Tokens of question and prompt a served context leaves room for, besides the reasoning budget
and the answer (LiveCodeBench prompts with starter code run to about 1,500 tokens)."""


def required_context_length(token_budget: int, answer_max_tokens: int) -> int:
    """The context a server needs for the router's longest request: the prompt, every
    reasoning token of the budget, and the answer."""
    return PROMPT_ALLOWANCE + token_budget + answer_max_tokens
