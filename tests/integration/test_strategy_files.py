"""A strategy written in a file outside the package (examples/strategies/hysteresis.py) runs
through the CLI's eval, in a run context and behind the endpoint; a request only ever names a
method the server allows, and no import path from a request is imported."""

from __future__ import annotations

import asyncio
import importlib
import json
import math
import sys
import types

import pytest
from starlette.testclient import TestClient

from glimprouter import RouterContext, graph, register_strategy
from glimprouter.cli import main
from glimprouter.endpoint import RouterLimits, create_app
from glimprouter.errors import ConfigError
from tests.fakes import chat, context_at, fake_model_server
from tests.paths import REPO

HYSTERESIS = "examples.strategies.hysteresis:Hysteresis"
# Glimpse entropies ln 4, ln 3, ln 2 for steps 0, 1, 2; threshold 1.2, lower 0.9: glimprouter
# hands back to the small model at step 1, hysteresis holds the large model until step 2.
KNOBS = {"threshold": 1.2, "knobs": "lower=0.9"}
HYSTERESIS_WRITERS = ["large", "large", "small"]
GLIMPROUTER_WRITERS = ["large", "small", "small"]


def falling_entropy(index, request):
    """The glimpse's candidates fall from 4 to 2 over the chain's steps."""
    if not request.get("top_logprobs") or request.get("top_logprobs") == 10:
        return None
    steps_done = request["messages"][-1]["content"].removeprefix("<think>\n").count("\n\n")
    candidates = 4 - steps_done
    return {"candidates": candidates, "top_logprob": -math.log(candidates)}


def writers(result):
    return [step["model"] for step in result["steps"]]


def run(method, **knobs):
    with fake_model_server(fault=falling_entropy) as server:
        context = context_at(server.url, method=method, **knobs)
        return asyncio.run(graph.ainvoke({"question": "What is 2 + 2?"}, context=context))


def test_the_file_strategy_holds_the_large_model_where_glimprouter_hands_back():
    assert writers(run(HYSTERESIS, **KNOBS)) == HYSTERESIS_WRITERS
    assert writers(run("glimprouter", threshold=1.2)) == GLIMPROUTER_WRITERS
    # Its own knob reaches it: a lower threshold under every entropy never hands back.
    assert writers(run(HYSTERESIS, threshold=1.2, knobs="lower=0.1")) == ["large"] * 3


def test_its_knobs_are_checked_naming_the_flag():
    with pytest.raises(ConfigError, match=r"--knob 'upper=1'.*its knobs: \['lower'\]"):
        RouterContext(method=HYSTERESIS, knobs="upper=1")
    with pytest.raises(ConfigError, match="cannot import 'Nope'.*package.module:ClassName"):
        RouterContext(method="examples.strategies.hysteresis:Nope")


def test_an_eval_runs_it_from_the_command_line(tmp_path, capsys):
    data = tmp_path / "problems.jsonl"
    data.write_text(json.dumps({"problem": "What is 2 + 2?", "answer": "4"}) + "\n")
    output = tmp_path / "hysteresis"
    with fake_model_server(fault=falling_entropy) as server:
        argv = ["eval", "--data-file", str(data), "--small-url", server.url,
                "--large-url", server.url, "--step-max-tokens", "16", "--token-budget", "64",
                "--answer-max-tokens", "16", "--method", HYSTERESIS, "--threshold", "1.2",
                "--knob", "lower=0.9", "--output", str(output)]  # fmt: skip
        assert main(argv) == 0
    config = json.loads((output / "config.json").read_text())
    assert config["method"] == HYSTERESIS and config["knobs"] == "lower=0.9"
    (record,) = [json.loads(line) for line in (output / "results.jsonl").open()]
    assert [step["model"] for step in record["trace"]] == HYSTERESIS_WRITERS
    capsys.readouterr()
    assert main(["report", str(output)]) == 0
    assert "hysteresis t=1.2 lower=0.9" in capsys.readouterr().out


def large_steps(client, **fields):
    reply = client.post("/v1/chat/completions", json=chat(**fields))
    assert reply.status_code == 200, reply.text
    return reply.json()["usage"]["glimprouter"]["large_steps"]


def test_a_server_started_with_the_strategy_runs_it():
    with fake_model_server(fault=falling_entropy) as server:
        base = context_at(server.url, method=HYSTERESIS, **KNOBS)
        with TestClient(create_app(base, RouterLimits())) as client:
            assert large_steps(client) == HYSTERESIS_WRITERS.count("large")


def test_a_request_names_only_what_the_server_allows_and_is_never_imported(monkeypatch):
    imported = []
    real_import = importlib.import_module

    def watched(name, *args):
        imported.append(name)
        return real_import(name, *args)

    with fake_model_server(fault=falling_entropy) as server:
        base = context_at(server.url, threshold=1.2)
        limits = RouterLimits(allow_methods=("glimprouter", HYSTERESIS))
        with TestClient(create_app(base, limits)) as client:
            monkeypatch.setattr("glimprouter.strategies.importlib.import_module", watched)
            assert large_steps(client) == GLIMPROUTER_WRITERS.count("large")
            # Hysteresis at its default lower=0.5, under every entropy: all three steps large.
            assert large_steps(client, method=HYSTERESIS) == 3
            for path in ("json:JSONDecoder", "tests.never_imported:Evil"):
                refused = client.post("/v1/chat/completions", json=chat(method=path))
                assert refused.status_code == 400
                error = refused.json()["error"]
                assert error["param"] == "method" and "--allow-methods" in error["message"]
    assert imported == []


def test_the_readmes_moving_threshold_strategy_runs_as_written(monkeypatch):
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Writing a strategy") :].split("\n## ", 1)[0]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    module = types.ModuleType("my_strategies")
    monkeypatch.setitem(sys.modules, "my_strategies", module)  # dataclasses look it up
    exec(compile(code, "README.md", "exec"), module.__dict__)  # our own README's code
    register_strategy(module.MovingStepEntropy, "moving-step-entropy")
    with fake_model_server() as server:
        for margin, expected in (("0.2", ["small", "large", "large"]), ("0.5", ["small"] * 3)):
            context = context_at(
                server.url, method="moving-step-entropy", knobs=f"margin={margin}", threshold=0.5
            )
            result = asyncio.run(graph.ainvoke({"question": "q"}, context=context))
            # Draft entropies ln 2, ln 3, ln 4 against 0.5, then the mean so far, + the margin.
            assert writers(result) == expected


def test_a_request_moves_the_strategys_own_knob_only_the_cheaper_way():
    with fake_model_server(fault=falling_entropy) as server:
        base = context_at(server.url, method=HYSTERESIS, **KNOBS)
        limits = RouterLimits(allow_methods=("glimprouter", HYSTERESIS))
        with TestClient(create_app(base, limits)) as client:
            # A lower `lower` keeps the large model writing longer: refused, naming the knob.
            refused = client.post("/v1/chat/completions", json=chat(knobs="lower=0.5"))
            assert refused.status_code == 400
            error = refused.json()["error"]
            assert (
                error["param"] == "knobs"
                and "lower=0.5 is below this server's 0.9" in (error["message"])
            )
            # A higher one hands back sooner: the small model writes steps 1 and 2.
            assert large_steps(client, knobs="lower=1.2") == 1
            # Another method the server allows starts from its own defaults.
            assert large_steps(client, method="glimprouter") == GLIMPROUTER_WRITERS.count("large")
