"""The compiled graph as users and LangGraph Studio see it."""

import importlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from glimprouter import graph

ROOT = Path(__file__).resolve().parents[1]


def test_graph_has_the_methods_nodes_and_edges():
    drawn = graph.get_graph()
    assert set(drawn.nodes) == {
        "__start__",
        "glimpse",
        "decide",
        "small_step",
        "large_step",
        "review",
        "check_termination",
        "answer",
        "__end__",
    }
    edges = {(edge.source, edge.target) for edge in drawn.edges}
    assert {
        ("__start__", "glimpse"),
        ("glimpse", "decide"),
        ("decide", "small_step"),
        ("decide", "large_step"),
        ("small_step", "check_termination"),
        ("small_step", "review"),
        ("review", "large_step"),
        ("review", "check_termination"),
        ("large_step", "check_termination"),
        ("check_termination", "glimpse"),
        ("check_termination", "answer"),
        ("answer", "__end__"),
    } <= edges


def test_schemas_expose_input_output_and_every_context_knob():
    assert set(graph.get_input_jsonschema()["properties"]) == {
        "question",
        "task",
        "prompt_template",
    }
    assert set(graph.get_output_jsonschema()["properties"]) == {
        "answer",
        "final_answer",
        "steps",
        "usage",
        "stop_reason",
        "error",
        "answer_cut",
    }
    knobs = graph.get_context_jsonschema()["properties"]
    assert {"threshold", "top_k", "small_base_url", "large_model", "token_budget"} <= set(knobs)
    assert all(knob.get("description") for knob in knobs.values())


def test_langgraph_json_exports_the_compiled_graph():
    config = json.loads((ROOT / "langgraph.json").read_text())
    path, _, attribute = config["graphs"]["glimprouter"].partition(":")
    module = ".".join(Path(path).with_suffix("").parts).lstrip(".")
    assert getattr(importlib.import_module(module), attribute) is graph


def test_langgraph_json_gives_a_langgraph_server_image(tmp_path):
    """`langgraph dockerfile` (what `langgraph build` builds, written without Docker): the image
    installs this package and serves every graph of langgraph.json."""
    # The environment's own CLI, beside its interpreter: CI runs the tests without the venv on PATH.
    cli = Path(sys.executable).with_name("langgraph")
    if not cli.exists():
        pytest.skip('langgraph-cli is not installed: pip install -e ".[studio]"')
    config = json.loads((ROOT / "langgraph.json").read_text())
    written = subprocess.run(
        [cli, "dockerfile", "-c", str(ROOT / "langgraph.json"), str(tmp_path / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ | {"LANGGRAPH_CLI_NO_ANALYTICS": "1"},
    )
    assert written.returncode == 0, written.stdout + written.stderr
    dockerfile = (tmp_path / "Dockerfile").read_text()
    assert "ADD . /deps/" in dockerfile and "pip install" in dockerfile
    served = json.loads(re.search(r"LANGSERVE_GRAPHS='(.*)'", dockerfile).group(1))
    assert set(served) == set(config["graphs"])
    for name, target in config["graphs"].items():
        assert served[name].endswith(target.removeprefix("."))
