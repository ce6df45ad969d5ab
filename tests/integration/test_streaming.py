"""What the graph streams: one custom event per step and the answer, and the models' tokens in
`messages` mode with the probe glimpse kept out."""

from __future__ import annotations

from glimprouter import RouterContext, graph, run_config
from tests.fakes import context_at, fake_model_server


async def stream(context: RouterContext) -> list[tuple[str, object]]:
    return [
        (mode, chunk)
        async for mode, chunk in graph.astream(
            {"question": "What is 2 + 2?"},
            context=context,
            config=run_config(context),
            stream_mode=["custom", "messages"],
        )
    ]


async def test_one_custom_event_per_step_then_the_answer():
    with fake_model_server() as server:
        events = [chunk for mode, chunk in await stream(context_at(server.url)) if mode == "custom"]
    assert [e["event"] for e in events] == ["step", "step", "step", "answer"]
    assert [e["index"] for e in events[:3]] == [0, 1, 2]
    assert [e["model"] for e in events[:3]] == ["small", "large", "large"]
    assert all({"entropy", "text", "completion_tokens"} <= set(e) for e in events[:3])


async def test_probe_glimpses_stay_out_of_the_token_stream():
    with fake_model_server() as server:
        chunks = await stream(context_at(server.url, glimpse_mode="probe"))
    tokens = [chunk for mode, chunk in chunks if mode == "messages"]
    nodes = [meta["langgraph_node"] for _, meta in tokens]
    assert "glimpse" not in nodes
    assert {"small_step", "large_step", "answer"} <= set(nodes)
    answer = "".join(token.content for token, meta in tokens if meta["langgraph_node"] == "answer")
    assert "\\boxed{4}" in answer
