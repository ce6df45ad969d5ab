"""`glimprouter serve` on a non-loopback --host refuses to start without a key (anyone reaching
the models would skip the router's keys and limits), and starts on loopback, with a key, or when
told --allow-unauthenticated; vLLM is never started here."""

from __future__ import annotations

import pytest

import glimprouter.vllm_launcher.cli as launcher_cli
from glimprouter.cli import build_parser, main
from glimprouter.vllm_launcher.cli import specs_from_args


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
