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
import asyncio
import json
import multiprocessing
import re
import socket
import time
from typing import Any

import openai
from _record import record, timed

from glimprouter import RouterContext, graph, run_config
from glimprouter.model_servers.client import complete, new_chain_id
from glimprouter.model_servers.streaming import stream_step

TOP = [{"token": t, "logprob": -0.6931, "bytes": [ord(t)]} for t in "ab"]  # entropy ln 2


def reply_text(body: dict[str, Any], steps_per_chain: int) -> str:
    """A step until the chain has `steps_per_chain` steps, then </think>, then the answer."""
    last = body["messages"][-1]
    prefix = last["content"] if last["role"] == "assistant" else ""
    if "</think>" in prefix:
        return "The answer is \\boxed{1}."
    done = prefix.count("\n\n")
    text = "So we finish.</think>" if done >= steps_per_chain - 1 else f"Step {done} holds.\n\n"
    return text[:1] if 1 in (body.get("max_completion_tokens"), body.get("max_tokens")) else text


def reply_body(body: dict[str, Any], steps_per_chain: int) -> tuple[bytes, bytes]:
    """(content type, body) of an instant chat completion: one chunk of text, then the finish."""
    text = reply_text(body, steps_per_chain)
    logprobs = (
        {"content": [{"token": text[:1], "logprob": -0.69, "bytes": [1], "top_logprobs": TOP}]}
        if body.get("logprobs")
        else None
    )
    usage = {"prompt_tokens": 100, "completion_tokens": 8, "total_tokens": 108}
    head = {"id": "x", "created": 0, "model": body["model"], "usage": usage}
    if not body.get("stream"):
        message = {"role": "assistant", "content": text}
        choice = {"index": 0, "message": message, "finish_reason": "stop", "logprobs": logprobs}
        return b"application/json", json.dumps(
            {**head, "object": "chat.completion", "choices": [choice]}
        ).encode()
    events = []
    for content, chunk_logprobs, finish in [(text, logprobs, None), ("", None, "stop")]:
        delta = {"content": content}
        choice = {"index": 0, "delta": delta, "logprobs": chunk_logprobs, "finish_reason": finish}
        chunk = {**head, "object": "chat.completion.chunk", "choices": [choice]}
        events.append(f"data: {json.dumps(chunk)}\n\n")
    events.append("data: [DONE]\n\n")
    return b"text/event-stream", "".join(events).encode()


MODELS = json.dumps({"object": "list", "data": [{"id": "small"}, {"id": "large"}]}).encode()


async def _answer(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, steps_per_chain: int
) -> None:
    """HTTP/1.1 keep-alive on a bare asyncio stream: the least CPU a server can spend per request,
    so that what the benchmarks measure is the router's."""
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = re.search(rb"(?i)content-length:\s*(\d+)", head)
            raw = await reader.readexactly(int(length.group(1))) if length else b""
            if head.startswith(b"GET /v1/models"):
                content_type, payload = b"application/json", MODELS
            else:
                content_type, payload = reply_body(json.loads(raw), steps_per_chain)
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: " + content_type
                + b"\r\ncontent-length: " + str(len(payload)).encode() + b"\r\n\r\n" + payload
            )  # fmt: skip
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()


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
    async def serve() -> None:
        server = await asyncio.start_server(
            lambda reader, writer: _answer(reader, writer, steps_per_chain), "127.0.0.1", port
        )
        await server.serve_forever()

    asyncio.run(serve())


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
            step = await stream_step(
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
