"""The endpoint's OpenAPI document, generated from the protocol's models: what a client generator
or a reader of /openapi.json sees is what the endpoint validates and sends."""

from __future__ import annotations

from importlib.metadata import version
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from glimprouter.endpoint.protocol import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ErrorResponse,
    Health,
    ModelList,
)

REF = "#/components/schemas/{model}"


def openapi_document(request: type[ChatCompletionRequest]) -> dict[str, Any]:
    """OpenAPI 3.1 for the routes of `create_app`, with `request` as the chat completion body."""
    models: list[type[BaseModel]] = [ChatCompletion, ChatCompletionChunk, ErrorResponse, Health]
    refs, schemas = models_json_schema(
        [(request, "validation"), *((model, "serialization") for model in [*models, ModelList])],
        ref_template=REF,
    )

    def ref(model: type[BaseModel], mode: str = "serialization") -> dict[str, Any]:
        return refs[(model, mode)]

    def reply(description: str, content: dict[str, Any]) -> dict[str, Any]:
        return {"description": description, "content": content}

    error = reply("An OpenAI error object", {"application/json": {"schema": ref(ErrorResponse)}})
    completion = {
        "summary": "Route one question between the small and the large model",
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": ref(request, "validation")}},
        },
        "responses": {
            "200": reply(
                "The completion, or with stream: true server-sent chat.completion.chunk events",
                {
                    "application/json": {"schema": ref(ChatCompletion)},
                    "text/event-stream": {"schema": ref(ChatCompletionChunk)},
                },
            ),
            "400": error,
            "404": error,
            "413": error,
            "502": error,
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "GlimpRouter", "version": version("glimprouter")},
        "paths": {
            "/v1/chat/completions": {"post": completion},
            "/v1/models": {
                "get": {
                    "summary": "The served model",
                    "responses": {
                        "200": reply(
                            "The model list", {"application/json": {"schema": ref(ModelList)}}
                        )
                    },
                }
            },
            "/health": {
                "get": {
                    "summary": "The router's load",
                    "responses": {
                        "200": reply("Load", {"application/json": {"schema": ref(Health)}})
                    },
                }
            },
        },
        "components": {"schemas": schemas["$defs"]},
    }
