"""examples/solve_then_verify.py: GlimpRouter as the reasoning subgraph of a larger agent."""

from __future__ import annotations

import dataclasses
import json

import pytest
from langgraph.graph import END
from langgraph.runtime import Runtime

from glimprouter import ConfigError, RouterContext
from tests.examples import EXAMPLE, load_example
from tests.paths import REPO

ROOT = REPO


stv = load_example()


def attempt(verdict=None, final_answer="7", critique="", steps=3):
    return {
        "answer": f"The answer is \\boxed{{{final_answer}}}.",
        "final_answer": final_answer,
        "steps": steps,
        "large_steps": 1,
        "stop_reason": "think_end",
        "verdict": verdict,
        "critique": critique,
    }


def step(index, model):
    return {
        "index": index,
        "model": model,
        "entropy": 0.5,
        "score": None,
        "draft": None,
        "text": f"step {index}",
        "finish": "separator",
        "completion_tokens": 4,
        "prompt_tokens": 50,
        "wall_s": 0.1,
    }


def test_the_agent_wraps_glimprouter_in_solve_and_verify():
    drawn = stv.agent.get_graph()
    assert set(drawn.nodes) == {"__start__", "solve", "verify", "__end__"}
    assert {(edge.source, edge.target) for edge in drawn.edges} == {
        ("__start__", "solve"),
        ("solve", "verify"),
        ("verify", "solve"),
        ("verify", "__end__"),
    }
    assert set(stv.agent.get_input_jsonschema()["properties"]) == {"problem"}
    knobs = stv.agent.get_context_jsonschema()["properties"]
    assert {f.name for f in dataclasses.fields(RouterContext)} < set(knobs)
    assert all(knob.get("description") for knob in knobs.values())


def test_langgraph_json_registers_the_agent():
    config = json.loads((ROOT / "langgraph.json").read_text())
    path, _, attribute = config["graphs"]["solve_then_verify"].partition(":")
    assert (ROOT / path).resolve() == EXAMPLE
    assert getattr(stv, attribute) is stv.agent


def test_first_attempt_asks_glimprouter_the_bare_problem():
    state = {"problem": "What is 3 + 4?", "attempts": []}
    assert stv.router_input(state) == {"question": "What is 3 + 4?", "task": "math"}


def test_a_rejected_attempt_becomes_a_hint_in_the_next_question():
    rejected = attempt("incorrect", final_answer="8", critique="3 + 4 is 7, not 8.")
    question = stv.router_input({"problem": "What is 3 + 4?", "attempts": [rejected]})["question"]
    assert question.startswith("What is 3 + 4?\n\n")
    assert "(8)" in question and "3 + 4 is 7, not 8." in question
    unboxed = attempt("unsure", final_answer=None)
    question = stv.router_input({"problem": "P", "attempts": [unboxed]})["question"]
    assert "no boxed answer" in question and "no reason given" in question


def test_glimprouter_output_maps_to_an_unverified_attempt():
    output = {
        "answer": "So \\boxed{7}.",
        "final_answer": "7",
        "steps": [step(0, "small"), step(1, "large"), step(2, "large")],
        "usage": {"small": {"requests": 3, "prompt_tokens": 150, "completion_tokens": 12}},
        "stop_reason": "end_of_sequence",
    }
    assert stv.attempt_from_output(output) == {
        "answer": "So \\boxed{7}.",
        "final_answer": "7",
        "steps": 3,
        "large_steps": 2,
        "stop_reason": "end_of_sequence",
        "verdict": None,
        "critique": "",
    }


@pytest.mark.parametrize(
    ("reply", "verdict", "critique"),
    [
        (" CORRECT. 3 + 4 = 7.", "correct", "3 + 4 = 7."),
        (" **Incorrect**: 3 + 4 is 7, not 8.", "incorrect", "3 + 4 is 7, not 8."),
        (" wrong, it is 7", "incorrect", "it is 7"),
        (" The answer looks fine.", "unsure", "answer looks fine."),
        ("", "unsure", ""),
    ],
)
def test_parse_verdict_reads_the_first_word(reply, verdict, critique):
    assert stv.parse_verdict(reply) == (verdict, critique)


def test_the_verifier_sees_the_problem_and_the_answer_and_continues_the_verdict():
    messages = stv.verify_messages("What is 3 + 4?", attempt(final_answer="8"))
    assert [message["role"] for message in messages] == ["user", "assistant"]
    assert "Problem: What is 3 + 4?" in messages[0]["content"]
    assert "Final answer: 8" in messages[0]["content"]
    assert messages[1]["content"] == stv.VERDICT_PREFIX


def run_with(**context):
    return Runtime(context=stv.SolveContext(**context))


def test_the_agent_retries_a_rejection_until_the_attempts_run_out():
    runtime = run_with(max_attempts=2)
    accepted = {"verdict": "correct", "attempts": [attempt("correct")]}
    assert stv.route_after_verify(accepted, runtime) == END
    rejected_once = {"verdict": "incorrect", "attempts": [attempt("incorrect")]}
    assert stv.route_after_verify(rejected_once, runtime) == "solve"
    assert stv.route_after_verify(rejected_once, run_with(max_attempts=1)) == END
    unsure_twice = {"verdict": "unsure", "attempts": [attempt("incorrect"), attempt("unsure")]}
    assert stv.route_after_verify(unsure_twice, runtime) == END


def test_solve_context_is_a_router_context_with_env_fallbacks(monkeypatch):
    monkeypatch.setenv("GLIMPROUTER_MAX_ATTEMPTS", "3")
    monkeypatch.setenv("GLIMPROUTER_THRESHOLD", "0.25")
    context = stv.SolveContext()
    assert isinstance(context, RouterContext)
    assert (context.max_attempts, context.threshold) == (3, 0.25)
    with pytest.raises(ConfigError, match="max_attempts=0 .*GLIMPROUTER_MAX_ATTEMPTS"):
        stv.SolveContext(max_attempts=0)
    with pytest.raises(ConfigError, match="verifier_model='medium'"):
        stv.SolveContext(verifier_model="medium")


def test_solve_context_accepts_what_a_caller_or_studio_passes():
    plain = RouterContext(threshold=0.5)
    promoted = stv.solve_context(plain)
    assert isinstance(promoted, stv.SolveContext) and promoted.threshold == 0.5
    assert stv.solve_context({"max_attempts": 1}).max_attempts == 1
    assert stv.solve_context(None) == stv.SolveContext()
    with pytest.raises(ConfigError, match="unknown context field"):
        stv.solve_context({"max_attempt": 1})
