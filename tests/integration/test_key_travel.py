"""An API key travels only to the URL it was configured with, never on a command line, and no
password in a URL is shown; servers started by `serve` see only the environment they need."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

import pytest

from glimprouter.cli import build_parser, main
from glimprouter.context_flags import add_context_flags, context_from_args
from glimprouter.errors import EndpointError
from glimprouter.graph.context import RouterContext, resolve_context
from glimprouter.graph.settings import redact_url
from glimprouter.model_servers.client import check_endpoints
from glimprouter.vllm_launcher.cli import specs_from_args
from glimprouter.vllm_launcher.command import ServerSpec, build_command, build_env
from tests.fakes import fake_model_server
from tests.routers import one_reply

KEY = "sk-env-SECRET-91ab"
HOME_URL = "http://127.0.0.1:8101/v1"


@pytest.fixture
def configured(monkeypatch: pytest.MonkeyPatch) -> None:
    """The environment's endpoint and its key, as a deployment (or Studio) sets them."""
    monkeypatch.setenv("GLIMPROUTER_SMALL_BASE_URL", HOME_URL)
    monkeypatch.setenv("GLIMPROUTER_SMALL_API_KEY", KEY)


@pytest.mark.usefixtures("configured")
def test_the_environments_key_stays_with_the_environments_url() -> None:
    assert RouterContext().small_api_key == KEY
    assert RouterContext(small_base_url=HOME_URL + "/").small_api_key == KEY
    # A Studio run context chooses another URL: the key is not sent there.
    studio = resolve_context({"small_base_url": "https://attacker.example/v1"})
    assert studio.small_api_key == "EMPTY"
    chosen = RouterContext(small_base_url="https://other.example/v1", small_api_key="sk-own")
    assert chosen.small_api_key == "sk-own"  # a key given with the URL goes with it


def test_the_default_url_takes_the_environments_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GLIMPROUTER_LARGE_API_KEY", KEY)
    assert RouterContext(large_base_url="http://127.0.0.1:8002/v1").large_api_key == KEY
    assert RouterContext(large_base_url="http://127.0.0.1:9999/v1").large_api_key == "EMPTY"


def _args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_context_flags(parser)
    return parser.parse_args(argv)


def test_a_key_on_the_command_line_is_warned_about(capsys: pytest.CaptureFixture) -> None:
    context = context_from_args(_args(["--large-api-key", "sk-argv"]))
    assert context.large_api_key == "sk-argv"
    err = capsys.readouterr().err
    assert "--large-api-key shows in ps" in err and "--large-api-key-file" in err
    assert "sk-argv" not in err


def test_a_key_file_keeps_the_key_off_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("sk-file\n")
    context = context_from_args(_args(["--small-api-key-file", str(key_file)]))
    assert context.small_api_key == "sk-file"
    assert capsys.readouterr().err == ""
    assert main(["ask", "2 + 2?", "--small-api-key-file", str(tmp_path / "none")]) == 2
    assert "cannot read the API key" in capsys.readouterr().err


def test_redact_url() -> None:
    assert redact_url("https://bob:hunter2@host:8443/v1") == "https://bob:***@host:8443/v1"
    assert redact_url("http://token@host/v1") == "http://token@host/v1"  # no password there
    assert redact_url("http://127.0.0.1:8001/v1") == "http://127.0.0.1:8001/v1"


def test_passwords_in_urls_stay_out_of_errors_and_results(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    url = "http://bob:hunter2@127.0.0.1:9/v1"
    context = RouterContext(small_base_url=url, large_base_url=url, max_retries=0)
    with pytest.raises(EndpointError) as raised:
        asyncio.run(check_endpoints(context))
    assert "hunter2" not in str(raised.value) and "bob:***@127.0.0.1:9" in str(raised.value)
    with fake_model_server(fail_model="large") as server:
        secret_url = server.url.replace("http://", "http://bob:hunter2@")
        data = tmp_path / "problems.jsonl"
        data.write_text(json.dumps({"problem": "What is 2 + 2?", "answer": "4"}) + "\n")
        status = main(["eval", "--data-file", str(data), "--output", str(tmp_path / "run"),
                       "--small-url", secret_url, "--large-url", secret_url,
                       "--max-retries", "0"])  # fmt: skip
    out, err = capsys.readouterr()
    written = (tmp_path / "run" / "results.jsonl").read_text()
    assert status == 1 and "bob:***@" in written
    assert "hunter2" not in out + err + written
    # The failure's reason is printed as it happens (rich wraps long lines on a pipe).
    printed, error = " ".join(err.split()), json.loads(written)["error"]
    assert (
        f"failed {json.loads(written)['problem_id']} (repeat 0): {' '.join(error.split())}"
        in printed
    )
    assert "1 failed (the same command run again retries them)" in printed


def test_serve_takes_its_api_key_from_a_file(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("sk-serve\n")
    args = build_parser().parse_args(["serve", "--model", "org/m", "--api-key-file", str(key_file)])
    [spec] = specs_from_args(args)
    assert spec.api_key == "sk-serve"
    assert "sk-serve" not in build_command(spec, cpu_only=True)


def test_served_models_get_a_filtered_environment_and_the_key_off_argv() -> None:
    base = {
        "PATH": "/bin",
        "HF_TOKEN": "hf_x",
        "GLIMPROUTER_LARGE_API_KEY": "sk-router",
        "OPENAI_API_KEY": "sk-openai",
        "AWS_SECRET_ACCESS_KEY": "aws",
        "VLLM_LOGGING_LEVEL": "INFO",
    }
    spec = ServerSpec(model="org/model", served_names=["s"], api_key="sk-serve")
    env = build_env(spec, cpu_only=False, base=base)
    assert env == {
        "PATH": "/bin",
        "HF_TOKEN": "hf_x",
        "VLLM_LOGGING_LEVEL": "INFO",
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
        "VLLM_API_KEY": "sk-serve",
    }
    assert "sk-serve" not in repr(spec)


def test_passwords_in_urls_stay_out_of_the_routers_banner_and_replies() -> None:
    """serve-router prints its model servers' URLs when it is ready, and logs the error of a
    chain a model server cuts: the password shows in neither, nor in the reply."""
    with fake_model_server(fault=lambda index, _: "500" if index >= 1 else None) as server:
        secret_url = server.url.replace("http://", "http://bob:hunter2@")
        command = [sys.executable, "-m", "glimprouter.cli", "serve-router", "--port", "0",
                   "--small-url", secret_url, "--large-url", secret_url,
                   "--max-retries", "0"]  # fmt: skip
        banner, reply, everything = one_reply(command, "2 + 2?")
    assert "bob:***@127.0.0.1" in banner
    # The reply names no URL at all; the log keeps it, without the password.
    assert reply.status_code == 502 and "bob" not in reply.text and "bob:***@" in everything
    assert "hunter2" not in everything + reply.text
