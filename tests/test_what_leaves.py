"""What leaves the router: a 502 names neither the backend's URL nor its reply (the log keeps
them), against a real serve-router process; `glimprouter serve` on a non-loopback --host refuses
to start without a key; dataset fields and zip members inflate at most MAX_INFLATED_BYTES."""

from __future__ import annotations

import base64
import zipfile
import zlib

import httpx
import pytest

import glimprouter.vllm_launcher.cli as launcher_cli
from glimprouter.cli import build_parser, main
from glimprouter.errors import ConfigError
from glimprouter.evals import datasets
from glimprouter.vllm_launcher.cli import specs_from_args
from tests.fakes import chat, fake_model_server
from tests.processes import stop
from tests.test_request_cost import start_router


def test_a_502_names_the_failed_model_but_not_its_url(tmp_path):
    log = tmp_path / "router.log"
    with fake_model_server(fail_model="large") as server, log.open("w") as stderr:
        router, url = start_router(server.url, stderr=stderr)
        try:
            reply = httpx.post(f"{url}/chat/completions", json=chat(), timeout=600)
        finally:
            stop(router)
    assert reply.status_code == 502
    body = reply.text
    assert "large model" in reply.json()["error"]["message"]
    port = server.url.split(":")[2].split("/")[0]
    for secret in (server.url, "127.0.0.1", port, "the fake model crashed"):
        assert secret not in body
    assert server.url in log.read_text()  # the operator still learns which server failed


@pytest.fixture
def no_vllm(monkeypatch):
    """`glimprouter serve` with whatever would start vLLM replaced by a failure."""

    def refuse(specs):
        raise AssertionError("vLLM would have started")

    monkeypatch.setattr(launcher_cli, "serve", refuse)
    monkeypatch.delenv("VLLM_API_KEY", raising=False)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "gpu-box.example"])
def test_serve_on_a_non_loopback_host_without_a_key_refuses_to_start(no_vllm, capsys, host):
    assert main(["serve", "--model", "org/m", "--host", host]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1
    assert f"--host {host}" in error and "--api-key-file" in error
    assert "--allow-unauthenticated" in error


@pytest.mark.parametrize(
    ("flags", "env"),
    [
        (["--host", "127.0.0.1"], {}),
        (["--host", "localhost"], {}),
        (["--host", "0.0.0.0", "--allow-unauthenticated"], {}),
        (["--host", "0.0.0.0", "--api-key-file", "KEYFILE"], {}),
        (["--host", "0.0.0.0"], {"VLLM_API_KEY": "k"}),
    ],
)
def test_serve_starts_on_loopback_or_with_a_key_or_when_told(
    no_vllm, monkeypatch, tmp_path, flags, env
):
    key_file = tmp_path / "key"
    key_file.write_text("secret\n")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    argv = ["serve", "--model", "org/m", *[str(key_file) if f == "KEYFILE" else f for f in flags]]
    assert specs_from_args(build_parser().parse_args(argv))


def test_a_zlib_bomb_in_a_dataset_field_is_refused(monkeypatch):
    monkeypatch.setattr(datasets, "MAX_INFLATED_BYTES", 4096)
    bomb = base64.b64encode(zlib.compress(b"[" + b" " * 10_000 + b"]")).decode()
    with pytest.raises(ConfigError, match="inflates past"):
        datasets._code_tests(bomb)
    with pytest.raises(ConfigError, match="inflates past 4,096 bytes"):
        datasets.inflate(zlib.compress(b"x" * 4097))
    assert datasets.inflate(zlib.compress(b"x" * 4096)) == b"x" * 4096
    with pytest.raises(zlib.error):
        datasets.inflate(zlib.compress(b"x" * 100)[:-6])


def test_a_zip_member_past_the_cap_is_refused(monkeypatch, tmp_path):
    archive = tmp_path / "rows.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as out:
        out.writestr("rows.jsonl", '{"q": 1}\n' * 1000)
    monkeypatch.setattr(datasets, "MAX_INFLATED_BYTES", 4096)
    with pytest.raises(ConfigError, match="inflates past"):
        list(datasets._read_json_lines(archive))
    monkeypatch.setattr(datasets, "MAX_INFLATED_BYTES", 1 << 20)
    assert len(list(datasets._read_json_lines(archive))) == 1000
