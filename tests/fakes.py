"""A fake OpenAI-compatible model server for fast tests: plausible steps and logprobs, and the
faults and malformed replies a real server can produce, on demand."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import re
import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from glimprouter import RouterContext
from glimprouter.evals.datasets import Problem
from glimprouter.model_servers.client import CANARY_QUESTION

# What a fault hook may answer for a request: None (answer normally), "500" (an error status),
# "hang" (accept and never answer), "until_closed" (never answer, and record in `closed` when the
# client closes the connection), "drop" (start the stream, then cut the connection), "stall"
# (start the stream, then send nothing more) or a dict
# of overrides for a well-formed reply ({"content": ..., "finish_reason": ..., "top_logprob":
# ..., "candidates": ..., "top_tokens": their texts, "finish_on_last_token": True, which streams
# the finish reason with the last token, as vLLM does, rather than in a chunk of its own,
# "after_first_token": a function called between a stream's first chunk and the rest}).
Fault = Callable[[int, dict[str, Any]], Any]


class JSONHandler(BaseHTTPRequestHandler):
    """A quiet request handler whose replies are JSON: the base of the tests' fake servers."""

    def _json(self, status: int, payload: Any) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def served(handler: type[BaseHTTPRequestHandler], **attributes: Any) -> Iterator[Any]:
    """`handler` serving on a free loopback port from a thread, until the block ends; the server
    carries `attributes` (the handler reads them as `self.server.<name>`) and `url`, its base
    URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    for name, value in attributes.items():
        setattr(server, name, value)
    server.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


class FakeModelServer(JSONHandler):
    """An OpenAI-compatible model server in miniature.

    Steps name the question they were asked about (so runs cannot be mixed up unseen): two that
    end at the separator, then one that ends the sequence. Step k's first token has k + 2 equally
    likely candidates, so its glimpse entropy is ln(k + 2): 0.69, 1.10, 1.39 nats. A token is a
    word with its trailing space; max_tokens cuts the text with finish_reason "length".
    """

    def do_GET(self):
        # `root` is what vLLM lists as the model behind a served name (its folder or hub id).
        root = {"root": self.server.root} if self.server.root else {}
        names = [{"id": "small", **root}, {"id": "large", **root}]
        self._json(200, {"object": "list", "data": names})

    def do_POST(self):
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.server.dies is not None:
            self._die(self.server.dies)
            return
        if not self.path.endswith("/chat/completions"):  # no vLLM /tokenize: like other servers
            self._json(404, {"error": {"message": f"no route {self.path}"}})
            return
        # The start-up canary is answered, but neither recorded nor subject to faults.
        canary = request["messages"][0]["content"] == CANARY_QUESTION
        with self.server.lock:
            index = len(self.server.requests)
            if not canary:
                self.server.requests.append(request)
                self.server.headers.append({k.lower(): v for k, v in self.headers.items()})
        time.sleep(self.server.delay_s)
        fault = self.server.fault(index, request) if self.server.fault and not canary else None
        if (request["model"] == self.server.fail_model and not canary) or fault == "500":
            self._json(500, {"error": {"message": "the fake model crashed"}})
            return
        if fault == "hang":
            self.server.released.wait()
            return
        if fault == "until_closed":
            self._wait_for_the_client_to_close(index)
            return
        overrides = fault if isinstance(fault, dict) else {}
        messages = request["messages"]
        tag = hashlib.sha1(messages[0]["content"].encode("utf-8", "surrogatepass")).hexdigest()
        prefix = messages[-1]["content"]
        steps_done = prefix.removeprefix("<think>\n").count("\n\n")
        if prefix.endswith("</think>\n\n"):
            text = f"The answer to {tag[:8]} is \\boxed{{4}}."
        elif steps_done < 2:
            text = f"Step {steps_done} on {tag[:8]}.\n\n"
        else:
            text = f"Last step on {tag[:8]}."
        text = overrides.get("content", text)
        tokens = re.findall(r"\S+\s*", text)
        max_tokens = request.get("max_completion_tokens", request.get("max_tokens"))
        finish = "length" if len(tokens) > max_tokens else "stop"
        finish = overrides.get("finish_reason", finish)
        tokens = tokens[:max_tokens]
        usage = {
            "prompt_tokens": sum(len(m["content"].split()) for m in messages),
            "completion_tokens": len(tokens),
            "total_tokens": 0,
        }
        candidates = overrides.get(
            "candidates", min(steps_done + 2, request.get("top_logprobs") or 1)
        )
        logprob = overrides.get("top_logprob", -math.log(steps_done + 2))

        def logprobs(token):
            if not request.get("logprobs"):
                return None
            names = overrides.get("top_tokens") or [f"t{i}" for i in range(candidates)]
            top = [
                {"token": name, "logprob": logprob, "bytes": list(name.encode())}
                for name in names[:candidates]
            ]
            entry = {"token": token, "logprob": logprob, "bytes": list(token.encode())}
            return {"content": [{**entry, "top_logprobs": top}]}

        head = {"id": "fake", "created": 0, "model": request["model"]}
        if not request.get("stream"):
            choice = {
                "index": 0,
                "message": {"role": "assistant", "content": "".join(tokens)},
                "logprobs": logprobs(tokens[0] if tokens else ""),
                "finish_reason": finish,
            }
            self._json(
                200, {**head, "object": "chat.completion", "choices": [choice], "usage": usage}
            )
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        chunks = [({"content": token}, None, logprobs(token)) for token in tokens or [""]]
        if overrides.get("finish_on_last_token"):
            chunks[-1] = (chunks[-1][0], finish, chunks[-1][2])
        else:
            chunks.append(({}, finish, None))
        # vLLM's continuous_usage_stats: each chunk counts the tokens generated so far, so a
        # stream the client cuts off reports what it cost up to there.
        continuous = (request.get("stream_options") or {}).get("continuous_usage_stats")
        try:
            for position, (delta, finish_reason, token_logprobs) in enumerate(chunks):
                if continuous:
                    generated = min(position + 1, len(tokens))
                    usage = {**usage, "completion_tokens": generated}
                if fault == "drop" and position == 1:
                    self.connection.shutdown(2)  # the server died in the middle of the step
                    return
                if fault == "stall" and position == 1:
                    self.server.released.wait()  # alive, but no more tokens ever come
                    return
                choice = {
                    "index": 0,
                    "delta": delta,
                    "logprobs": token_logprobs,
                    "finish_reason": finish_reason,
                }
                chunk = {**head, "object": "chat.completion.chunk", "choices": [choice]}
                self.wfile.write(f"data: {json.dumps(chunk | {'usage': usage})}\n\n".encode())
                self.wfile.flush()
                if position == 0 and "after_first_token" in overrides:
                    overrides["after_first_token"]()
            self.wfile.write(b"data: [DONE]\n\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the glimpse closed the stream after the first token: the large model writes

    def _die(self, how: str) -> None:
        """As a SIGKILLed server: the port closed and this connection reset, before any answer
        ("at_first_post") or after half of one ("mid_reply")."""
        if how == "mid_reply":
            body = json.dumps({"id": "fake", "object": "chat.completion", "choices": []}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
        self.server.shutdown()  # no connection is accepted once this one is reset
        self.server.server_close()
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()

    def _wait_for_the_client_to_close(self, index: int) -> None:
        while not self.server.released.is_set():
            readable, _, _ = select.select([self.connection], [], [], 0.05)
            if readable and not self.connection.recv(1, socket.MSG_PEEK):
                with self.server.lock:
                    self.server.closed.append(index)
                return


@contextlib.contextmanager
def fake_model_server(
    delay_s: float = 0.0,
    fail_model: str | None = None,
    fault: Fault | None = None,
    root: str | None = None,
    dies: str | None = None,
) -> Iterator[Any]:
    """Serve the fake on a free loopback port; `server.url` is its base URL, `server.requests`
    every request body it received, `server.headers` their headers (names in lower case), and
    `server.closed` the requests whose client closed the connection while an "until_closed"
    fault held them. `server.fault` may be changed live. `root`: the model the served names
    stand for in /v1/models (unlisted by default, as on servers other than vLLM). With `dies` the
    server dies at its first POST (the start-up canary, after answering /models), as a replica
    killed mid-check: "at_first_post" resets the connection unanswered, "mid_reply" after half a
    reply."""
    released = threading.Event()
    with served(
        FakeModelServer, requests=[], delay_s=delay_s, fail_model=fail_model, headers=[],
        closed=[], root=root, dies=dies, fault=fault, lock=threading.Lock(), released=released,
    ) as server:  # fmt: skip
        try:
            yield server
        finally:
            released.set()  # the requests a fault holds end before the server stops


def context_at(url: str, **overrides: Any) -> RouterContext:
    """Both models on the fake at `url`, with small budgets, no retries and a short timeout."""
    settings = {
        "small_base_url": url,
        "large_base_url": url,
        "step_max_tokens": 16,
        "token_budget": 64,
        "answer_max_tokens": 16,
        "max_retries": 0,
        "request_timeout": 10,
    }
    return RouterContext(**{**settings, **overrides})


def chat(question: str = "What is 2 + 2?", **fields: Any) -> dict[str, Any]:
    """A chat completion request body for the router's model, asking `question`."""
    return {"model": "glimprouter", "messages": [{"role": "user", "content": question}], **fields}


def tiny_steps(index: int, request: dict[str, Any]) -> Any:
    """A fault hook making a chain that never ends by itself: every step a different tiny one
    (so the loop guard does not stop it), until the answer."""
    if request["messages"][-1]["content"].endswith("</think>\n\n"):
        return None
    return {"content": f"Tiny step {index}.\n\n"}


def problem(name: str) -> Problem:
    return Problem("faults", name, f"What is {name}?", "math", "4")
