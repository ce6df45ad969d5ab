"""The vLLM server the session's launcher started (`glimprouter serve --model`): it serves both
aliases, logprobs, and continues an assistant prefix. The launcher's fast tests are
tests/integration/test_vllm_launcher.py."""

from __future__ import annotations

import pytest


@pytest.mark.vllm
def test_real_server_serves_aliases_logprobs_and_continuation(vllm_base_url: str) -> None:
    import httpx

    with httpx.Client(base_url=vllm_base_url, timeout=120) as http:
        assert {m["id"] for m in http.get("/models").json()["data"]} >= {"small", "large"}
        question = {"role": "user", "content": "What is 12 * 7?"}
        probe = http.post(
            "/chat/completions",
            json={
                "model": "large",
                "messages": [question],
                "logprobs": True,
                "top_logprobs": 20,
                "max_tokens": 1,
            },
        ).json()
        assert len(probe["choices"][0]["logprobs"]["content"][0]["top_logprobs"]) == 20
        step = http.post(
            "/chat/completions",
            json={
                "model": "small",
                "messages": [question, {"role": "assistant", "content": "<think>\nFirst,"}],
                "continue_final_message": True,
                "add_generation_prompt": False,
                "max_tokens": 16,
                "stop": ["\n\n"],
            },
        ).json()
        assert step["choices"][0]["message"]["content"]
