"""The question of a request: the text of its last user message, checked part by part (the
request model has checked each message's role)."""

from __future__ import annotations

from typing import Any

from glimprouter.endpoint.errors import RequestError
from glimprouter.endpoint.protocol import ChatMessage


def question_of(messages: list[ChatMessage] | None) -> str:
    """The question: the text of the last user message, which must end the conversation.

    System messages and earlier turns are not sent to the models: each request routes one
    question, worded by the request's task template.
    """
    if not messages:
        raise RequestError(
            400,
            "messages is missing or empty: send the question as a user message",
            param="messages",
        )
    users = [index for index, message in enumerate(messages) if message.role == "user"]
    if not users:
        raise RequestError(
            400, "messages has no user message: the last one is the question", param="messages"
        )
    last = users[-1]
    if last != len(messages) - 1:
        raise RequestError(
            400,
            f"messages[{last + 1}] ({messages[last + 1].role}) follows the last user "
            "message: GlimpRouter answers a user message and cannot continue another turn",
            param=f"messages[{last + 1}]",
        )
    text = _text_of(messages[last].content, f"messages[{last}].content")
    if not text.strip():
        raise RequestError(
            400, f"messages[{last}].content is empty: give the question", param=f"messages[{last}]"
        )
    try:
        text.encode()
    except UnicodeEncodeError:  # JSON escapes can spell lone surrogates, which no model reads
        raise RequestError(
            400, f"messages[{last}].content is not valid Unicode", param=f"messages[{last}]"
        ) from None
    return text


def _text_of(content: Any, param: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list) and content:
        texts = []
        for part in content:
            if not (isinstance(part, dict) and part.get("type") == "text"):
                kind = part.get("type") if isinstance(part, dict) else None
                raise RequestError(
                    400,
                    f"{param} has a content part of type {kind!r}: only text parts are supported",
                    param=param,
                )
            if not isinstance(part.get("text"), str):
                raise RequestError(
                    400, f"{param} has a text part without a string text", param=param
                )
            texts.append(part["text"])
        return "\n".join(texts)
    raise RequestError(
        400, f"{param} must be a string or a non-empty list of text parts", param=param
    )
