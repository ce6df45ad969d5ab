"""API keys never appear in output, logs, results, saved chains or error messages."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from glimprouter import RouterContext
from glimprouter.cli import main
from glimprouter.endpoint import create_app
from tests.fakes import fake_model_server

SMALL_KEY = "sk-small-SECRET-7f3a9"
LARGE_KEY = "sk-large-SECRET-c41e2"
KEYS = (SMALL_KEY, LARGE_KEY)


def key_flags(url: str) -> list[str]:
    return [
        "--small-url", url, "--large-url", url,
        "--small-api-key", SMALL_KEY, "--large-api-key", LARGE_KEY,
        "--step-max-tokens", "16", "--token-budget", "64", "--answer-max-tokens", "16",
    ]  # fmt: skip


def assert_no_key(*texts: str) -> None:
    for text in texts:
        for key in KEYS:
            assert key not in text


@pytest.fixture
def debug_logs(caplog):
    caplog.set_level(logging.DEBUG)  # every library's debug logging, openai and httpx included
    return caplog


def test_ask_output_logs_and_saved_chain_hold_no_key(capsys, debug_logs, tmp_path):
    with fake_model_server() as server:
        db = tmp_path / "threads.sqlite"
        status = main(["ask", "What is 2 + 2?", "--json", "--thread-id", "t", "--checkpoint-db",
                       str(db), *key_flags(server.url)])  # fmt: skip
        sent = list(zip(server.requests, server.headers, strict=True))
    out, err = capsys.readouterr()
    assert status == 0 and json.loads(out)["steps"]
    # Each model's key went to the server, in the Authorization header only.
    keys = {"small": SMALL_KEY, "large": LARGE_KEY}
    assert {body["model"] for body, _ in sent} == {"small", "large"}
    for body, headers in sent:
        assert headers["authorization"] == f"Bearer {keys[body['model']]}", headers
        assert_no_key(json.dumps(body))
    assert_no_key(out, err, debug_logs.text, db.read_bytes().decode("latin-1"))


def test_eval_results_and_config_hold_no_key(capsys, debug_logs, tmp_path):
    data = tmp_path / "problems.jsonl"
    data.write_text(json.dumps({"problem": "What is 2 + 2?", "answer": "4"}) + "\n")
    with fake_model_server() as server:
        status = main(["eval", "--data-file", str(data), "--output", str(tmp_path / "run"),
                       *key_flags(server.url)])  # fmt: skip
    out, err = capsys.readouterr()
    assert status == 0
    written = "".join(path.read_text() for path in (tmp_path / "run").iterdir())
    assert "steps" in written
    assert_no_key(out, err, debug_logs.text, written)


def test_error_messages_hold_no_key(capsys, debug_logs):
    with fake_model_server(fail_model="large") as server:
        status = main(["ask", "What is 2 + 2?", *key_flags(server.url)])
    out, err = capsys.readouterr()
    assert status == 2 and "large model server" in err
    assert_no_key(out, err, debug_logs.text)
    status = main(["ask", "What is 2 + 2?", *key_flags("http://127.0.0.1:9/v1")])
    out, err = capsys.readouterr()
    assert status == 2 and "cannot reach" in err
    assert_no_key(out, err, debug_logs.text)


def test_the_context_repr_holds_no_key():
    context = RouterContext(small_api_key=SMALL_KEY, large_api_key=LARGE_KEY)
    assert_no_key(repr(context), str(context))


def test_router_endpoint_replies_hold_no_key(debug_logs):
    with fake_model_server(fail_model="large") as server:
        context = RouterContext(
            small_base_url=server.url,
            large_base_url=server.url,
            small_api_key=SMALL_KEY,
            large_api_key=LARGE_KEY,
            step_max_tokens=16,
            token_budget=64,
            answer_max_tokens=16,
            max_retries=0,
        )
        with TestClient(create_app(context)) as client:
            replies = [
                client.post(
                    "/v1/chat/completions",
                    content=b"{not json",
                    headers={"Content-Type": "application/json"},
                ),
                client.post("/v1/chat/completions", json={"model": "glimprouter", "messages": []}),
                client.post(
                    "/v1/chat/completions",
                    json={
                        "model": "glimprouter",
                        "messages": [{"role": "user", "content": "2+2?"}],
                    },
                ),
                client.get("/v1/models"),
                client.get("/health"),
            ]
    assert [reply.status_code for reply in replies] == [400, 400, 502, 200, 200]
    assert_no_key(*(reply.text for reply in replies), debug_logs.text)


def test_keys_given_by_environment_stay_out_of_eval_config(monkeypatch, tmp_path: Path):
    monkeypatch.setenv("GLIMPROUTER_SMALL_API_KEY", SMALL_KEY)
    from glimprouter.evals.results import run_identity

    assert_no_key(json.dumps(run_identity("x", RouterContext(), 1)))
