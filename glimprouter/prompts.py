"""Prompt templates per task and the assistant prefixes the chain of thought is continued from."""

from __future__ import annotations

from collections.abc import Sequence

from glimprouter.errors import ConfigError

# The paper's step boundary, a blank line: the default of the step_separator setting.
STEP_SEPARATOR = "\n\n"
THINK_OPEN = "<think>\n"
THINK_CLOSE = "</think>"

# The reference implementation's wording (arXiv 2601.05110, Zengwh02/GlimpRouter), so results
# stay comparable; its doubled braces after \boxed (a str.format leftover) are written single.
TEMPLATES: dict[str, str] = {
    "math": (
        "Solve the following math problem and return ONLY the final answer.\n"
        "Please reason step by step, separate logical reasoning steps with two newline "
        "characters (\n\n), and put your final answer within \\boxed{}.\n\n"
        "Problem: {question}\n\n"
    ),
    "multiple_choice": (
        "What is the correct answer to the following problem? Please reason step by step.\n"
        "Separate logical reasoning steps with two newline characters (\n\n).\n"
        "Put the final answer **strictly** in the format \\boxed{X}, where X is a single letter "
        "(A, B, C, or D).\n\n**Example output:** \\boxed{A}\n\n"
        "Problem: {question}\n\n"
    ),
    "code": (
        "Write code to solve the following problem and return ONLY the code.\n"
        "You will generate a correct Python program that matches the specification and passes "
        "all tests.\n\nQuestion: {question}"
    ),
    "plain": "{question}",
}


# The code template ends at the question because the reference appends one of these after it.
CODE_STARTER_INSTRUCTION = (
    "You will use the following starter code to write the solution to the problem and enclose "
    "your code within delimiters.\n```python\n{starter_code}\n```\n\n"
)
CODE_STDIN_INSTRUCTION = (
    "Read the inputs from stdin solve the problem and write the answer to stdout (do not "
    "directly test on the sample inputs). Enclose your code within delimiters as follows.\n"
    "```python\n# YOUR CODE HERE\n```\n\n"
)


def code_question(content: str, starter_code: str) -> str:
    """A LiveCodeBench problem as the {question} of the code template, with the reference's
    instruction for starter-code (functional) or stdin problems."""
    if starter_code:
        instruction = CODE_STARTER_INSTRUCTION.replace("{starter_code}", starter_code)
    else:
        instruction = CODE_STDIN_INSTRUCTION
    return f"{content}\n\n{instruction}"


def render_question(question: str, task: str = "math", template: str | None = None) -> str:
    """The user message for a question, from the task's template or a caller's own."""
    if not question or not question.strip():
        raise ConfigError("the question is empty: pass the text to reason about")
    if template is None:
        if task not in TEMPLATES:
            raise ConfigError(f"unknown task {task!r}; valid tasks: {sorted(TEMPLATES)}")
        template = TEMPLATES[task]
    elif "{question}" not in template:
        raise ConfigError("prompt_template must contain the placeholder {question}")
    return template.replace("{question}", question)


def thinking_prefix(step_texts: Sequence[str], separator: str = STEP_SEPARATOR) -> str:
    """Assistant text the next step continues: '<think>\\n' then each step and its separator."""
    return THINK_OPEN + "".join(text + separator for text in step_texts)


def answer_prefix(step_texts: Sequence[str], separator: str = STEP_SEPARATOR) -> str:
    """Assistant text the answer continues: the thinking, closed by exactly one </think>.

    When a step already closed the thinking, whatever followed </think> in it is dropped, so the
    answer model writes the whole answer.
    """
    thinking = separator.join(step_texts)
    if THINK_CLOSE in thinking:
        thinking = thinking.split(THINK_CLOSE, 1)[0].rstrip("\n")
    return f"{THINK_OPEN}{thinking}\n{THINK_CLOSE}\n\n"


def continuation_messages(user_message: str, assistant_prefix: str) -> list[dict[str, str]]:
    """Chat messages that make the server continue `assistant_prefix` verbatim."""
    return [
        {"role": "user", "content": user_message},
        {"role": "assistant", "content": assistant_prefix},
    ]


def next_step_messages(
    question: str,
    step_texts: Sequence[str],
    task: str = "math",
    template: str | None = None,
    step_begun: str = "",
    separator: str = STEP_SEPARATOR,
) -> list[dict[str, str]]:
    """The request that continues the chain of thought with its next step (after `step_begun`,
    the part of that step a model has written so far)."""
    return continuation_messages(
        render_question(question, task, template),
        thinking_prefix(step_texts, separator) + step_begun,
    )


def answer_messages(
    question: str,
    step_texts: Sequence[str],
    task: str = "math",
    template: str | None = None,
    separator: str = STEP_SEPARATOR,
) -> list[dict[str, str]]:
    """The request that writes the final answer after the closed thinking."""
    return continuation_messages(
        render_question(question, task, template), answer_prefix(step_texts, separator)
    )


# SpecReason's judge (Pan et al., 2025), worded as in its code so scores compare.
JUDGE_INSTRUCTION = (
    "Evaluate the last reasoning step solely based on factual correctness and logical validity. "
    "Ignore style, phrasing, or overall usefulness—only judge whether the step is objectively "
    "correct and logically follows from prior steps. Assign a score from 0 to 9."
)
JUDGE_ANSWER_PREFIX = "<think>I think the quality score is: "


def judge_messages(
    question: str,
    step_texts: Sequence[str],
    task: str = "math",
    template: str | None = None,
    separator: str = STEP_SEPARATOR,
) -> list[dict[str, str]]:
    """The request in which the large model scores the last of `step_texts` from 0 to 9."""
    return [
        {"role": "user", "content": render_question(question, task, template)},
        {"role": "assistant", "content": thinking_prefix(step_texts, separator)},
        {"role": "user", "content": JUDGE_INSTRUCTION},
        {"role": "assistant", "content": JUDGE_ANSWER_PREFIX},
    ]
