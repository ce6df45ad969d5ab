"""Router overhead per step: the compiled graph against a bare asyncio loop over the `openai`
client making the same requests, both against a loopback server that answers instantly.

    python benchmarks/overhead.py [--questions 40] [--steps 8] [--model-step-s 4.0]

`--model-step-s` is a step's model time at the local pair's speed (median step wall time of a
local-pair eval), to put the overhead in proportion.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import threading
import time

import openai
import uvicorn
from _record import record
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from glimprouter import RouterContext, graph, run_config

TOP = [{"token": t, "logprob": -0.6931, "bytes": [ord(t)]} for t in "ab"]  # entropy ln 2


def fake_server(steps_per_chain: int) -> Starlette:
    """Answers instantly: a step until the chain has `steps_per_chain` steps, then </think>."""

    def reply_text(body: dict) -> str:
        prefix = (
            body["messages"][-1]["content"] if body["messages"][-1]["role"] == "assistant" else ""
        )
        if "</think>" in prefix:
            return "The answer is \\boxed{1}."
        done = prefix.count("\n\n")
        return "So we finish.</think>" if done >= steps_per_chain - 1 else f"Step {done} holds.\n\n"

    async def models(_: Request) -> JSONResponse:
        return JSONResponse({"object": "list", "data": [{"id": "small"}, {"id": "large"}]})

    async def chat(request: Request):
        body = await request.json()
        text = reply_text(body)
        if body.get("max_completion_tokens") == 1 or body.get("max_tokens") == 1:
            text = text[:1]
        logprobs = (
            {"content": [{"token": text[:1], "logprob": -0.69, "bytes": [1], "top_logprobs": TOP}]}
            if body.get("logprobs")
            else None
        )
        usage = {"prompt_tokens": 100, "completion_tokens": 8, "total_tokens": 108}
        if not body.get("stream"):
            return JSONResponse(
                {
                    "id": "x",
                    "object": "chat.completion",
                    "created": 0,
                    "model": body["model"],
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": text},
                            "finish_reason": "stop",
                            "logprobs": logprobs,
                        }
                    ],
                    "usage": usage,
                }
            )

        async def events():
            pieces = [(text, logprobs, None), ("", None, "stop")]
            for content, chunk_logprobs, finish in pieces:
                chunk = {
                    "id": "x",
                    "object": "chat.completion.chunk",
                    "created": 0,
                    "model": body["model"],
                    "usage": usage,
                    "choices": [
                        {
                            "index": 0,
                            "delta": {"content": content},
                            "logprobs": chunk_logprobs,
                            "finish_reason": finish,
                        }
                    ],
                }
                yield f"data: {json.dumps(chunk)}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return Starlette(
        routes=[Route("/v1/models", models), Route("/v1/chat/completions", chat, methods=["POST"])]
    )


def start(app: Starlette) -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, port=port, log_level="error"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return f"http://127.0.0.1:{port}/v1"


async def bare_loop(url: str, questions: int, steps: int) -> float:
    """The same requests as the graph's stream mode, with nothing around them."""
    client = openai.AsyncOpenAI(base_url=url, api_key="EMPTY")
    started = time.perf_counter()
    for _ in range(questions):
        chain: list[str] = []
        for _ in range(steps):
            messages = [
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": "<think>\n" + "".join(chain)},
            ]
            stream = await client.chat.completions.create(
                model="small",
                messages=messages,
                stream=True,
                logprobs=True,
                top_logprobs=20,
                max_completion_tokens=512,
                stop=["\n\n"],
                extra_body={"continue_final_message": True, "add_generation_prompt": False},
            )
            text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
            chain.append(text)
        await client.chat.completions.create(
            model="large",
            messages=[
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": "".join(chain)},
            ],
            max_completion_tokens=64,
        )
    await client.close()
    return time.perf_counter() - started


async def through_graph(url: str, questions: int) -> tuple[float, int]:
    context = RouterContext(small_base_url=url, large_base_url=url, threshold=1.0)
    started = time.perf_counter()
    steps = 0
    for index in range(questions):
        result = await graph.ainvoke(
            {"question": f"q{index}"}, context=context, config=run_config(context)
        )
        steps += len(result["steps"])
    return time.perf_counter() - started, steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=40)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--model-step-s", type=float, default=None)
    args = parser.parse_args()
    url = start(fake_server(args.steps))
    asyncio.run(through_graph(url, 3))  # warm up imports and connections
    asyncio.run(bare_loop(url, 3, args.steps))
    graph_s, steps = asyncio.run(through_graph(url, args.questions))
    bare_s = asyncio.run(bare_loop(url, args.questions, args.steps))
    assert steps == args.questions * args.steps, steps
    per_step_graph = 1000 * graph_s / steps
    per_step_bare = 1000 * bare_s / steps
    lines = [
        f"- {args.questions} questions x {args.steps} steps, streamed glimpse, instant server",
        f"- graph: {per_step_graph:.2f} ms per step; bare openai loop: "
        f"{per_step_bare:.2f} ms per step",
        f"- ratio graph / bare: **{graph_s / bare_s:.2f}x** (target <= 1.2x)",
        f"- overhead beyond the bare loop: {per_step_graph - per_step_bare:.2f} ms per step",
    ]
    if args.model_step_s:
        share = per_step_graph / 1000 / args.model_step_s
        lines.append(
            f"- router time per step vs a {args.model_step_s:g} s model step on the local "
            f"pair: **{100 * share:.2f}%** (target < 3%)"
        )
    record("Router overhead per step (loopback server)", lines)


if __name__ == "__main__":
    main()
