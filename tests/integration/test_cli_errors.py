"""Bad input at the command line: one clear line naming the setting, never a traceback."""

from __future__ import annotations

import json
import socket

import pytest

from glimprouter.cli import main
from tests.fakes import JSONHandler, served


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_cli(capsys, *argv):
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.err.strip()


def ask_both_at(capsys, url, *flags):
    """`glimprouter ask` with both models at `url`."""
    return run_cli(capsys, "ask", "What is 1+1?", "--small-url", url, "--large-url", url, *flags)


def assert_one_line(status, err, *needles):
    assert status == 2
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err


def test_unreachable_endpoint(capsys):
    url = f"http://127.0.0.1:{closed_port()}/v1"
    status, err = run_cli(capsys, "ask", "What is 1+1?", "--small-url", url, "--large-url", url)
    assert_one_line(status, err, "cannot reach the small model server", "--small-url")


def test_empty_question(capsys):
    status, err = run_cli(capsys, "ask", "  ")
    assert_one_line(status, err, "question is empty")


def test_negative_threshold(capsys):
    status, err = run_cli(capsys, "ask", "q", "--threshold", "-1")
    assert_one_line(status, err, "threshold", "GLIMPROUTER_THRESHOLD")


def test_bad_answer_model(capsys):
    status, err = run_cli(capsys, "ask", "q", "--answer-model", "medium")
    assert_one_line(status, err, "answer_model", "['small', 'large']")


class NoLogprobsServer(JSONHandler):
    """An OpenAI-compatible server that never returns logprobs (like many hosted APIs)."""

    def do_GET(self):
        self._json(
            200,
            {
                "object": "list",
                "data": [{"id": "small", "object": "model"}, {"id": "large", "object": "model"}],
            },
        )

    def do_POST(self):
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        usage = {"prompt_tokens": 10, "completion_tokens": 1, "total_tokens": 11}
        if not request.get("stream"):
            self._json(
                200,
                {
                    "id": "x",
                    "object": "chat.completion",
                    "created": 0,
                    "model": "small",
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": "The"},
                            "finish_reason": "length",
                            "logprobs": None,
                        }
                    ],
                    "usage": usage,
                },
            )
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        for delta, finish in (({"role": "assistant", "content": "The"}, None), ({}, "length")):
            chunk = {
                "id": "x",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": "small",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                "usage": usage,
            }
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
        self.wfile.write(b"data: [DONE]\n\n")


@pytest.fixture
def no_logprobs_url():
    with served(NoLogprobsServer) as server:
        yield server.url


@pytest.mark.parametrize("mode", ["stream", "probe"])
def test_server_without_logprobs(capsys, no_logprobs_url, mode):
    status, err = ask_both_at(capsys, no_logprobs_url, "--max-retries", "0", "--glimpse-mode", mode)
    assert_one_line(status, err, "returned no usable logprobs", "--small-url")


def test_unknown_model_lists_served_ones(capsys, no_logprobs_url):
    status, err = ask_both_at(capsys, no_logprobs_url, "--small-model", "tiny")
    assert_one_line(status, err, "does not serve 'tiny'", "['small', 'large']", "--small-model")


def test_resuming_an_unknown_thread_says_so(capsys, tmp_path):
    status, err = run_cli(
        capsys, "ask", "--thread-id", "nope", "--checkpoint-db", str(tmp_path / "t.sqlite")
    )
    assert_one_line(status, err, "no chain is saved under thread id 'nope'", "--checkpoint-db")


def test_ask_needs_a_question_or_a_thread(capsys):
    status, err = run_cli(capsys, "ask")
    assert_one_line(status, err, "give a question, or --thread-id")


def test_unwritable_checkpoint_db_names_the_setting(capsys, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    status, err = run_cli(
        capsys, "ask", "Q?", "--thread-id", "t", "--checkpoint-db", str(blocker / "sub" / "t.db")
    )
    assert_one_line(status, err, "--checkpoint-db")
