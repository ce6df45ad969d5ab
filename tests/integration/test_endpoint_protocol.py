"""The endpoint's wire format comes from its pydantic models: what /openapi.json publishes is what
the endpoint accepts and sends, and what it sends is what the OpenAI SDK's own types read."""

from __future__ import annotations

import dataclasses
import json
import re

import jsonschema
import openai.types.chat as sdk_types
import pytest
from starlette.testclient import TestClient

from glimprouter.endpoint import create_app
from glimprouter.graph.context import RouterContext
from glimprouter.graph.settings import request_knobs, setting
from tests.fakes import chat, context_at
from tests.paths import REPO

CHAT = chat()


@dataclasses.dataclass(kw_only=True)
class WithBeams(RouterContext):
    beams: int | None = dataclasses.field(
        default=None, metadata=setting("Beams per step.", flag_help="beams", request=True)
    )


@pytest.fixture(scope="module")
def client(backend):
    with TestClient(create_app(context_at(backend.url))) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def document(client):
    return client.get("/openapi.json").json()


def schema_of(document, name: str) -> dict:
    """A component of the document as a standalone JSON schema (its references resolvable)."""
    return {"$ref": f"#/components/schemas/{name}", "components": document["components"]}


def test_the_document_describes_every_route_and_knob(document):
    jsonschema.Draft202012Validator.check_schema(schema_of(document, "ChatCompletionRequest"))
    assert set(document["paths"]) == {"/v1/chat/completions", "/v1/models", "/health"}
    request = document["components"]["schemas"]["ChatCompletionRequest"]
    descriptions = {f.name: f.metadata["description"] for f in dataclasses.fields(RouterContext)}
    for knob in request_knobs(RouterContext):
        assert request["properties"][knob]["description"] == descriptions[knob]
    assert request["additionalProperties"] is False


def test_a_new_request_setting_is_accepted_and_published(backend):
    app = create_app(dataclasses.replace(context_at(backend.url), method="large-only"))
    beams_app = create_app(WithBeams(**dataclasses.asdict(context_at(backend.url))))
    with TestClient(app) as plain, TestClient(beams_app) as with_beams:
        assert plain.post("/v1/chat/completions", json=CHAT | {"beams": 2}).status_code == 400
        assert with_beams.post("/v1/chat/completions", json=CHAT | {"beams": 2}).status_code == 200
        refused = with_beams.post("/v1/chat/completions", json=CHAT | {"beams": "two"}).json()
        assert refused["error"]["message"] == 'beams must be a 64-bit integer, not "two"'
        schema = with_beams.get("/openapi.json").json()["components"]["schemas"]
        assert schema["ChatCompletionRequest"]["properties"]["beams"]["description"] == (
            "Beams per step."
        )


def test_what_is_sent_matches_the_document_and_the_sdk_types(client, document):
    completion = client.post("/v1/chat/completions", json=CHAT).json()
    jsonschema.validate(completion, schema_of(document, "ChatCompletion"))
    sdk_types.ChatCompletion.model_validate(completion)

    body = CHAT | {"stream": True, "stream_options": {"include_usage": True}}
    with client.stream("POST", "/v1/chat/completions", json=body) as stream:
        events = [line[6:] for line in stream.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] > 0
    for chunk in chunks:
        jsonschema.validate(chunk, schema_of(document, "ChatCompletionChunk"))
        sdk_types.ChatCompletionChunk.model_validate(chunk)

    refused = client.post("/v1/chat/completions", json=CHAT | {"n": 3})
    assert refused.status_code == 400
    jsonschema.validate(refused.json(), schema_of(document, "ErrorResponse"))
    jsonschema.validate(client.get("/health").json(), schema_of(document, "Health"))
    jsonschema.validate(client.get("/v1/models").json(), schema_of(document, "ModelList"))


def test_the_endpoint_docs_list_the_request_knobs():
    text = (REPO / "docs" / "endpoint.md").read_text()
    listing = text[text.index("Per-request knobs") :].split(" set `token_budget`", 1)[0]
    listed = set(re.findall(r"`(\w+)`", listing)) - {
        "extra_body",
        "max_tokens",
        "max_completion_tokens",
    }
    assert listed == set(request_knobs(RouterContext)) | {"task"}
