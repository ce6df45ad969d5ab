"""Every built-in strategy writes the chains it wrote before the strategy interface: the same
steps, writers, scores, answers and requests, on the fake model servers with fixed seeds.

tests/data/recorded_chains.json was recorded on the code before the interface
(`python -m tests.integration.test_recorded_chains` rewrites it: only for an intended change)."""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any

import pytest

from glimprouter import graph
from tests.fakes import context_at, fake_model_server
from tests.paths import REPO

RECORDED = REPO / "tests" / "data" / "recorded_chains.json"

# (method, knobs): each method at thresholds on both sides of the fake's glimpse entropies
# (ln 2, ln 3, ln 4) and judge scores, in both glimpse modes.
CASES: list[tuple[str, dict[str, Any]]] = [
    (method, {"glimpse_mode": mode, **knobs})
    for mode in ("stream", "probe")
    for method, knobs in [
        ("glimprouter", {"threshold": 1.0}),
        ("glimprouter", {"threshold": 0.0}),
        ("glimprouter", {"threshold": 5.0}),
        ("small-only", {}),
        ("large-only", {}),
        ("random", {"large_rate": 0.5, "seed": 7}),
        ("random", {"large_rate": 0.5, "seed": 11}),
        ("step-entropy", {"threshold": 0.5}),
        ("step-entropy", {"threshold": 5.0}),
        ("step-ppl", {"threshold": 2.5}),
        ("step-ppl", {"threshold": 9.0}),
        ("specreason", {"threshold": 7.0}),
        ("specreason", {"threshold": 0.0}),
    ]
]


def _judge_digits(index: int, request: dict[str, Any]) -> Any:
    """The judge (one token, top 10 logprobs, not streamed) answers in digits whose expected
    value varies with the step judged, so specreason both keeps and rewrites drafts."""
    if request.get("top_logprobs") != 10 or request["messages"][-1]["role"] != "assistant":
        return None
    if "quality score" not in request["messages"][-1]["content"]:
        return None
    steps = request["messages"][1]["content"].count("\n\n")
    digits = ["8", "9"] if steps % 2 else ["3", "6", "9"]
    return {"content": digits[0], "top_tokens": digits, "candidates": len(digits)}


def _request(body: dict[str, Any]) -> dict[str, Any]:
    keep = ("model", "stream", "max_tokens", "max_completion_tokens", "logprobs", "top_logprobs")
    return {
        **{key: body[key] for key in keep if key in body},
        "messages": [message["content"] for message in body["messages"]],
    }


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 9) if math.isfinite(value) else str(value)
    if isinstance(value, dict):
        return {key: _rounded(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_rounded(item) for item in value]
    return value


def run_case(method: str, knobs: dict[str, Any]) -> dict[str, Any]:
    """One chain of `method` with `knobs`: what it returned and every request it sent."""
    with fake_model_server(fault=_judge_digits) as server:
        context = context_at(server.url, method=method, warm_prefix_cache=False, **knobs)
        result = asyncio.run(graph.ainvoke({"question": "What is 2 + 2?"}, context=context))
    steps = [
        {key: value for key, value in step.items() if key not in ("wall_s", "replica")}
        for step in result["steps"]
    ]
    return _rounded(
        {
            "steps": steps,
            "answer": result["answer"],
            "final_answer": result["final_answer"],
            "stop_reason": result["stop_reason"],
            "usage": result["usage"],
            "requests": [_request(body) for body in server.requests],
        }
    )


def case_id(method: str, knobs: dict[str, Any]) -> str:
    return method + "".join(f" {key}={value}" for key, value in sorted(knobs.items()))


@pytest.mark.parametrize(("method", "knobs"), CASES, ids=[case_id(*case) for case in CASES])
def test_chain_is_the_recorded_one(method, knobs):
    recorded = json.loads(RECORDED.read_text())[case_id(method, knobs)]
    assert run_case(method, knobs) == recorded


if __name__ == "__main__":  # re-record: only for an intended change of the chains
    chains = {case_id(*case): run_case(*case) for case in CASES}
    RECORDED.write_text(json.dumps(chains, indent=1, sort_keys=True) + "\n")
    print(f"recorded {len(chains)} chains in {RECORDED}")
