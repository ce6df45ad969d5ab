"""Which chat template a server needs so the router's prefixes are continued verbatim.

The router continues two kinds of assistant prefix: the thinking so far ("<think>\\n" and the
steps), and the answer prefix, which closes the thinking with "</think>". A stock template is
judged by what it does to both, rendered as vLLM renders them (transformers, with
continue_final_message), not by the model's name: Qwen3-style templates wrap the continued
text in an (empty) think block; DeepSeek-R1-Distill and QwQ-style templates cut everything up to
"</think>", which makes the answer request fail ("final message does not appear in the chat").
Such a template is replaced by a verbatim one of the same family.
"""

from __future__ import annotations

from pathlib import Path

from glimprouter.continuation import PROBE_PREFIXES, Behaviour, judge_rendering
from glimprouter.errors import ConfigError

TEMPLATES_DIR = Path(__file__).parent / "templates"
VERBATIM_TEMPLATES: dict[str, Path] = {
    "chatml": TEMPLATES_DIR / "chatml_verbatim.jinja",
    "deepseek": TEMPLATES_DIR / "deepseek_verbatim.jinja",
}
"""A verbatim template per template family, keyed by `template_family`."""


def _render_continuation(template: str, prefix: str) -> str:
    from transformers.utils.chat_template_utils import render_jinja_template

    messages = [
        {"role": "user", "content": "What is 2 + 2?"},
        {"role": "assistant", "content": prefix},
    ]
    rendered, _ = render_jinja_template(
        conversations=[messages],
        chat_template=template,
        continue_final_message=True,
        add_generation_prompt=False,
        bos_token="",
        eos_token="",
    )
    return rendered[0]


def continuation_behaviour(template: str) -> Behaviour:
    """What `template` does to a continued assistant prefix: "verbatim" (renders it as given),
    "wraps" (adds think tags around it) or "strips" (cuts part of it)."""
    for prefix in PROBE_PREFIXES:
        try:
            rendered: str | None = _render_continuation(template, prefix)
        except ValueError:  # transformers: "the final message does not appear in the chat"
            rendered = None
        if (behaviour := judge_rendering(prefix, rendered)) != "verbatim":
            return behaviour
    return "verbatim"


def template_family(template: str) -> str | None:
    """The format family of a template ("chatml", "deepseek"), or None if neither."""
    if "<|im_start|>" in template:
        return "chatml"
    if "<｜Assistant｜>" in template:
        return "deepseek"
    return None


def choose_template(stock: str | None, model: str) -> Path | None:
    """The --chat-template for a model whose stock template is `stock`; None keeps the stock one
    (it continues verbatim, or it could not be read: the start-up canary checks the server)."""
    if stock is None:
        return None
    behaviour = continuation_behaviour(stock)
    if behaviour == "verbatim":
        return None
    family = template_family(stock)
    if family is None:
        raise ConfigError(
            f"the chat template of {model} {behaviour} the continued assistant text and is "
            f"neither ChatML nor DeepSeek: pass --chat-template PATH with a template that renders "
            "the final assistant message verbatim"
        )
    return VERBATIM_TEMPLATES[family]
