"""The compiled graph as users and LangGraph Studio see it."""

import importlib
import json
from pathlib import Path

from glimprouter import graph
from tests.contract import OUTPUT_KEYS, ROUTER_NODES
from tests.paths import REPO

ROOT = REPO


def test_graph_has_the_methods_nodes_and_edges():
    drawn = graph.get_graph()
    assert set(drawn.nodes) == ROUTER_NODES | {"__start__", "__end__"}
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
    assert set(graph.get_output_jsonschema()["properties"]) == OUTPUT_KEYS
    knobs = graph.get_context_jsonschema()["properties"]
    assert {"threshold", "top_k", "small_base_url", "large_model", "token_budget"} <= set(knobs)
    assert all(knob.get("description") for knob in knobs.values())


def test_langgraph_json_exports_the_compiled_graph():
    config = json.loads((ROOT / "langgraph.json").read_text())
    path, _, attribute = config["graphs"]["glimprouter"].partition(":")
    module = ".".join(Path(path).with_suffix("").parts).lstrip(".")
    assert getattr(importlib.import_module(module), attribute) is graph
