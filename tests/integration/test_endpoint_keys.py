"""serve-router's API keys: without a valid `Authorization: Bearer KEY` a request gets an
OpenAI-shaped 401 and runs nothing; keys never show in a reply or a log line; /health stays
open; a non-loopback address with no key is refused unless allowed."""

from __future__ import annotations

import logging

import openai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from glimprouter.cli import main
from glimprouter.endpoint import create_app
from glimprouter.endpoint.keys import KEYS_ENV, ApiKeys, keys_from
from tests.fakes import chat, context_at, fake_model_server

KEYS = ["sk-first-0123456789", "sk-second-abcdefghij"]
# What an HTTP header may carry: visible Latin-1, spaces and tabs.
HEADER_TEXT = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=255), max_size=60)
CHAT = chat()


@pytest.fixture(scope="module")
def client(backend):
    with TestClient(create_app(context_at(backend.url), api_keys=ApiKeys(KEYS))) as test_client:
        yield test_client


def post(client, authorization: str | None):
    headers = {} if authorization is None else {"Authorization": authorization}
    return client.post("/v1/chat/completions", json=CHAT, headers=headers)


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        "Bearer sk-wrong",
        f"Basic {KEYS[0]}",
        KEYS[0],
        f"Bearer {KEYS[0]}x",
        f"Bearer {KEYS[0][:-1]}",
        f"Token {KEYS[1]}",
    ],  # fmt: skip
)
def test_a_request_without_a_valid_key_gets_a_401_and_runs_nothing(client, backend, authorization):
    before = len(backend.requests)
    reply = post(client, authorization)
    assert reply.status_code == 401 and reply.headers["www-authenticate"] == "Bearer"
    error = reply.json()["error"]
    assert error["code"] == "invalid_api_key" and error["type"] == "invalid_request_error"
    assert all(key not in reply.text for key in KEYS)
    assert len(backend.requests) == before


@pytest.mark.parametrize("authorization", [f"Bearer {KEYS[0]}", f"bearer  {KEYS[1]} "])
def test_each_key_is_admitted(client, authorization):
    assert post(client, authorization).status_code == 200


def test_the_sdk_sends_its_api_key_and_health_stays_open(client):
    sdk = openai.OpenAI(base_url="http://testserver/v1", api_key=KEYS[1], http_client=client)
    assert sdk.models.list().data[0].id == "glimprouter"
    refused = openai.OpenAI(
        base_url="http://testserver/v1", api_key="sk-nope", http_client=client, max_retries=0
    )
    with pytest.raises(openai.AuthenticationError):
        refused.chat.completions.create(**CHAT)
    assert client.get("/health").status_code == 200
    assert client.get("/openapi.json").status_code == 200
    assert client.get("/v1/models").status_code == 401


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    header=st.one_of(HEADER_TEXT, st.builds(lambda key: f"Bearer {key}", HEADER_TEXT)),
)
def test_fuzzed_authorization_headers_never_get_through_nor_fail(client, header):
    reply = client.post(
        "/v1/chat/completions", json=CHAT, headers={"Authorization": header.encode("latin-1")}
    )
    assert reply.status_code == 401, (header, reply.text)


def test_keys_come_from_flags_files_and_the_environment(tmp_path, monkeypatch):
    keys_file = tmp_path / "keys"
    keys_file.write_text("# team A\nsk-file-one\n\nsk-file-two\n")
    monkeypatch.setenv(KEYS_ENV, "sk-env-one, sk-env-two")
    keys = keys_from(["sk-flag"], [keys_file])
    assert len(keys) == 5
    for key in ("sk-flag", "sk-file-one", "sk-file-two", "sk-env-one", "sk-env-two"):
        assert keys.admits(f"Bearer {key}")
    assert not keys.admits("Bearer # team A")


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (["--host", "0.0.0.0"], "--allow-unauthenticated"),
        (["--api-key-file", "/nonexistent/keys"], "cannot read the API keys"),
    ],
)
def test_unsafe_or_broken_key_settings_are_one_line(capsys, monkeypatch, flags, needle):
    monkeypatch.delenv(KEYS_ENV, raising=False)
    with fake_model_server() as server:
        url = server.url
        status = main(["serve-router", "--small-url", url, "--large-url", url, *flags])
        assert server.requests == [], "refused before any model server is asked"
    err = capsys.readouterr().err
    assert status == 2 and needle in err and len(err.strip().splitlines()) == 1


def test_a_key_is_never_logged(client, caplog):
    with caplog.at_level(logging.DEBUG):
        post(client, f"Bearer {KEYS[0]}")
        post(client, "Bearer sk-guess-that-is-wrong")
    assert all(key not in caplog.text for key in [*KEYS, "sk-guess-that-is-wrong"])
