"""Faults and load against the real vLLM server of the test session: a server killed mid-step,
then back; and 64 questions at once with no error and no trace mixed up between them."""

from __future__ import annotations

import asyncio
import dataclasses
from urllib.parse import urlparse

import pytest
from langchain_core.callbacks import AsyncCallbackHandler

from glimprouter import graph, run_config
from glimprouter.graph.invoke import run_question
from glimprouter.graph.threads import DURABILITY, durable_graph, thread_config
from glimprouter.prompts import answer_messages, render_question
from tests.proxy import KillableProxy

pytestmark = pytest.mark.vllm

QUESTION = "Count from one to twenty, one number per step."
CONCURRENT_QUESTIONS = 64


@pytest.fixture
def proxy(vllm_base_url):
    proxy = KillableProxy(urlparse(vllm_base_url).port)
    yield proxy
    proxy.close()


async def test_small_server_killed_mid_step_stops_the_run_then_it_resumes(
    server_context, proxy, tmp_path
):
    context = dataclasses.replace(
        server_context,
        small_base_url=proxy.url,  # the small model's server is the one that dies
        threshold=100.0,  # every step streamed by the small model: a kill lands mid-stream
        step_max_tokens=16,
        token_budget=80,
        answer_max_tokens=16,
        max_retries=1,
    )
    config = thread_config(context, "killed")
    # The second step's stream dies after its role chunk and first token, before the chunk that
    # would say how the step ended: mid-step however fast the model writes.
    proxy.cut_response(request_number=2, after_events=2)

    async with durable_graph(tmp_path / "threads.sqlite") as durable:
        failed = await run_question(
            durable, {"question": QUESTION}, context, config, durability=DURABILITY
        )
        assert proxy.died.is_set(), f"the chain ended before its second step: {failed}"
        assert failed["stop_reason"] == "endpoint_error", failed
        assert f"small model server at {proxy.url}" in failed["error"]
        assert len(failed["steps"]) == 1

        proxy.start()  # the server is back
        resumed = await run_question(durable, None, context, config, durability=DURABILITY)
    assert resumed["error"] is None and resumed["stop_reason"] != "endpoint_error"
    assert resumed["steps"][0] == failed["steps"][0]
    assert len(resumed["steps"]) > 1 and resumed["answer"] is not None


class SentMessages(AsyncCallbackHandler):
    """Every chat request a run sent, as the messages the model server received."""

    def __init__(self) -> None:
        self.sent: list[list[dict[str, str]]] = []

    async def on_chat_model_start(self, serialized, messages, **kwargs) -> None:
        for batch in messages:
            self.sent.append([{"role": _ROLES[m.type], "content": m.content} for m in batch])


_ROLES = {"human": "user", "ai": "assistant", "system": "system"}


async def test_64_concurrent_questions_complete_with_their_own_traces(server_context):
    context = dataclasses.replace(
        server_context,
        step_max_tokens=8,
        token_budget=16,
        answer_max_tokens=8,
        request_timeout=900,
    )
    questions = [f"Question {i:02d}: what is {i} + 7?" for i in range(CONCURRENT_QUESTIONS)]
    recorders = [SentMessages() for _ in questions]
    results = await asyncio.gather(
        *(
            run_question(
                graph, {"question": question}, context, run_config(context, callbacks=[sent])
            )
            for question, sent in zip(questions, recorders, strict=True)
        )
    )
    assert all(result["error"] is None for result in results), [r["error"] for r in results]
    assert all(result["steps"] and result["stop_reason"] for result in results)
    for question, result, recorder in zip(questions, results, recorders, strict=True):
        # Every request of a run asked about its own question, and its answer request carried
        # exactly its own chain of steps.
        sent = recorder.sent
        assert len(sent) >= len(result["steps"]) + 1
        assert all(render_question(question) == messages[0]["content"] for messages in sent)
        own = answer_messages(question, [step["text"] for step in result["steps"]])
        assert sent[-1] == own, question
