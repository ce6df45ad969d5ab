"""examples/solve_then_verify.py against the real vLLM server: the agent solves, verifies and
keeps GlimpRouter's results. Its fast tests are tests/unit/test_example_agent.py."""

from __future__ import annotations

import pytest

from tests.examples import load_example

stv = load_example()


@pytest.mark.vllm
async def test_the_agent_solves_verifies_and_keeps_glimprouters_results(vllm_base_url):
    context = stv.SolveContext(
        small_base_url=vllm_base_url,
        large_base_url=vllm_base_url,
        step_max_tokens=16,
        token_budget=48,
        answer_max_tokens=16,
        verify_max_tokens=16,
        request_timeout=120,
        seed=0,
        max_attempts=2,
    )
    runs: dict[tuple, dict] = {}  # per GlimpRouter run (subgraph namespace): steps, answer, usage
    final = None
    async for namespace, mode, data in stv.agent.astream(
        {"problem": "What is 3 + 4?"},
        context=context,
        stream_mode=["custom", "values"],
        subgraphs=True,
    ):
        if not namespace:
            final = data if mode == "values" else final
            continue
        run = runs.setdefault(namespace, {"steps": [], "answer": None, "values": None})
        if mode == "custom" and data["event"] == "step":
            run["steps"].append(data)
        elif mode == "custom" and data["event"] == "answer":
            run["answer"] = data["text"]
        elif mode == "values":
            run["values"] = data

    attempts = final["attempts"]
    assert 1 <= len(attempts) <= 2 and len(runs) == len(attempts)
    assert all(namespace[0].startswith("solve:") for namespace in runs)
    for attempt_record, run in zip(attempts, runs.values(), strict=True):
        assert run["steps"], run
        assert attempt_record["steps"] == len(run["steps"])
        assert attempt_record["large_steps"] == sum(s["model"] == "large" for s in run["steps"])
        assert attempt_record["answer"] == run["answer"] == run["values"]["answer"]
        assert attempt_record["stop_reason"] == run["values"]["stop_reason"]
        assert attempt_record["verdict"] in ("correct", "incorrect", "unsure")
    assert final["verdict"] == attempts[-1]["verdict"]
    assert final["answer"] == attempts[-1]["answer"]
    if len(attempts) == 2:
        assert attempts[0]["verdict"] != "correct"
    else:
        assert final["verdict"] == "correct"
    # The agent's usage: every routed run plus one verifier request per attempt.
    for role in ("small", "large"):
        routed = sum(
            run["values"]["usage"].get(role, {}).get("requests", 0) for run in runs.values()
        )
        verifications = len(attempts) if role == "large" else 0
        assert final["usage"].get(role, {}).get("requests", 0) == routed + verifications
