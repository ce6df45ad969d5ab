"""Router overhead per step: the compiled graph against a bare asyncio loop over the `openai`
client making the same requests, both against a loopback server that answers instantly.

    python benchmarks/overhead.py [--questions 40] [--steps 8] [--repeats 3] [--model-step-s 4.0]

The figure that counts is the router process's CPU time per step: wall time on a shared machine
mostly measures the neighbours. The fake server runs in its own process so none of its work is
counted, and the client layer (ChatOpenAI without the graph) is timed too, to show where the
time goes.

`--model-step-s` is a step's model time at the local pair's speed (median step wall time of a
local-pair eval), to put the overhead in proportion.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import socket
import time

import openai
import uvicorn
from _record import record, timed
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from glimprouter import RouterContext, graph, run_config
from glimprouter.model_servers.client import complete, new_chain_id, stream_with_glimpse

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


def start(steps_per_chain: int) -> str:
    """Serve the fake model in its own process, so the router's CPU time is the router's alone."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = multiprocessing.Process(target=_serve, args=(steps_per_chain, port), daemon=True)
    server.start()
    while True:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return f"http://127.0.0.1:{port}/v1"
        time.sleep(0.05)


def _serve(steps_per_chain: int, port: int) -> None:
    uvicorn.run(fake_server(steps_per_chain), port=port, log_level="error")


async def bare_loop(url: str, questions: int, steps: int) -> int:
    """The same requests as the graph's stream mode, with nothing around them."""
    client = openai.AsyncOpenAI(base_url=url, api_key="EMPTY")
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
    return questions * steps


async def client_layer(url: str, questions: int, steps: int) -> int:
    """The same requests through glimprouter.model_servers.client (ChatOpenAI), without the
    graph around them."""
    context = RouterContext(small_base_url=url, large_base_url=url)
    for _ in range(questions):
        chain: list[str] = []
        chain_id = new_chain_id()
        for _ in range(steps):
            messages = [
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": "<think>\n" + "".join(chain)},
            ]
            step = await stream_with_glimpse(
                context,
                "small",
                messages,
                keep=lambda _: True,
                chain_id=chain_id,
                max_tokens=512,
                temperature=0.6,
                top_p=0.95,
                stop=["\n\n"],
                top_logprobs=20,
            )
            chain.append(step.completion.text if step.completion else "")
        await complete(
            context,
            "large",
            [{"role": "user", "content": "q"}, {"role": "assistant", "content": "".join(chain)}],
            chain_id=chain_id,
            max_tokens=64,
            temperature=0.6,
        )
    return questions * steps


async def through_graph(url: str, questions: int) -> int:
    context = RouterContext(small_base_url=url, large_base_url=url, threshold=1.0)
    steps = 0
    for index in range(questions):
        result = await graph.ainvoke(
            {"question": f"q{index}"}, context=context, config=run_config(context)
        )
        steps += len(result["steps"])
    return steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=40)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs of each")
    parser.add_argument("--model-step-s", type=float, default=None)
    args = parser.parse_args()
    url = start(args.steps)
    timed(through_graph(url, 3))  # warm up imports and connections
    timed(bare_loop(url, 3, args.steps))
    graph_runs, client_runs, bare_runs = [], [], []
    for _ in range(args.repeats):  # interleaved, so a burst of load hits all alike
        graph_runs.append(timed(through_graph(url, args.questions)))
        client_runs.append(timed(client_layer(url, args.questions, args.steps)))
        bare_runs.append(timed(bare_loop(url, args.questions, args.steps)))
    steps = graph_runs[0][2]
    assert steps == args.questions * args.steps, steps
    graph_wall, graph_cpu = (min(run[i] for run in graph_runs) * 1000 / steps for i in (0, 1))
    client_cpu = min(run[1] for run in client_runs) * 1000 / steps
    bare_wall, bare_cpu = (min(run[i] for run in bare_runs) * 1000 / steps for i in (0, 1))
    lines = [
        f"- {args.questions} questions x {args.steps} steps, streamed glimpse, instant server in "
        f"its own process; best of {args.repeats}",
        f"- router CPU time: graph {graph_cpu:.2f} ms per step, bare openai loop "
        f"{bare_cpu:.2f} ms per step: ratio **{graph_cpu / bare_cpu:.2f}x** (target <= 1.2x)",
        f"- wall time: graph {graph_wall:.2f} ms per step, bare {bare_wall:.2f} ms per step: "
        f"ratio {graph_wall / bare_wall:.2f}x",
        f"- overhead beyond the bare loop: {graph_cpu - bare_cpu:.2f} ms CPU per step, of which "
        f"the ChatOpenAI client layer {client_cpu - bare_cpu:.2f} ms and the LangGraph run "
        f"{graph_cpu - client_cpu:.2f} ms",
    ]
    if args.model_step_s:
        share = graph_wall / 1000 / args.model_step_s
        lines.append(
            f"- router time per step vs a {args.model_step_s:g} s model step on the local "
            f"pair: **{100 * share:.2f}%** (target < 3%)"
        )
    record("Router overhead per step (loopback server)", lines)


if __name__ == "__main__":
    main()
