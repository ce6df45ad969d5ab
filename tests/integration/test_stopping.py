"""Every long-running command stops on SIGTERM as on Ctrl-C, keeping what it finished, and the
live view shows model text exactly as written.

The commands run as subprocesses started the way a shell starts a background job (SIGINT
ignored), against the fake model server of tests/fakes.py, which holds a request open until the
client leaves: each command is mid-run when the signal comes, by construction.
"""

from __future__ import annotations

import asyncio
import io
import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from rich.console import Console

from glimprouter.live_view import show_event, show_summary
from glimprouter.stopping import Stopped, exit_status, run, sigterm_stops
from tests.fakes import fake_model_server
from tests.processes import Lines, running, wait_until

ENDPOINT_FLAGS = ["--step-max-tokens", "16", "--token-budget", "64", "--answer-max-tokens", "16"]
GRACE_S = 120  # an upper bound for a loaded machine: a clean stop takes well under a second


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "glimprouter.cli", *args]


def endpoints(url: str) -> list[str]:
    return ["--small-url", url, "--large-url", url, *ENDPOINT_FLAGS]


def hold_from(first_held: int):
    """A fault hook that answers the first requests, then holds each later one open until its
    client closes the connection."""
    return lambda index, request: "until_closed" if index >= first_held else None


def terminate(process: subprocess.Popen) -> int:
    process.send_signal(signal.SIGTERM)
    return process.wait(timeout=GRACE_S)


def test_run_turns_sigterm_into_stopped_after_the_finally_blocks() -> None:
    unwound = []

    async def forever() -> None:
        asyncio.get_running_loop().call_soon(signal.raise_signal, signal.SIGTERM)
        try:
            await asyncio.Event().wait()
        finally:
            unwound.append(True)

    with sigterm_stops(), pytest.raises(Stopped) as stopped:
        run(forever())
    assert unwound == [True]
    assert exit_status(stopped.value) == 143
    assert exit_status(KeyboardInterrupt()) == 130


def test_sigterm_stops_synchronous_code_and_the_handler_comes_back() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with sigterm_stops(), pytest.raises(Stopped):
        signal.raise_signal(signal.SIGTERM)
    assert signal.getsignal(signal.SIGTERM) is before


def test_eval_stopped_by_sigterm_keeps_its_records_and_resumes(tmp_path: Path) -> None:
    data = tmp_path / "problems.jsonl"
    data.write_text(
        "".join(json.dumps({"problem": f"What is {n} + 1?", "answer": str(n + 1)}) + "\n"
                for n in range(3))
    )  # fmt: skip
    output = tmp_path / "run"
    command = cli("eval", "--data-file", str(data), "--output", str(output), "--concurrency", "1")
    # Problem 0 takes six requests (three glimpsed steps, two large rewrites, the answer).
    with fake_model_server(fault=hold_from(6)) as server:
        command += endpoints(server.url)
        with running(command, ignore_sigint=True, stderr=subprocess.PIPE, text=True) as job:
            wait_until(lambda: len(server.requests) > 6, 120, "the second problem under way")
            assert terminate(job) == 143
            stderr = job.stderr.read()
        assert "stopped (SIGTERM)" in stderr and "Traceback" not in stderr, stderr
        lines = (output / "results.jsonl").read_text().splitlines()
        assert len(lines) == 1 and json.loads(lines[0])["problem_id"] == "1"
        server.fault = None
        again = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert again.returncode == 0, again.stderr
    records = [json.loads(line) for line in (output / "results.jsonl").read_text().splitlines()]
    assert records[0] == json.loads(lines[0])
    assert sorted(record["problem_id"] for record in records) == ["1", "2", "3"]


def test_ask_with_a_thread_stopped_by_sigterm_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    db = tmp_path / "threads.sqlite"
    thread = ["--thread-id", "t", "--checkpoint-db", str(db)]
    # Requests 0-1: step 0 and the glimpse of step 1; the large model's step 1 is held.
    with fake_model_server(fault=hold_from(2)) as server:
        command = cli("ask", "What is 2 + 2?", *thread, *endpoints(server.url))
        with running(command, ignore_sigint=True, stdout=subprocess.PIPE, text=True) as job:
            wait_until(lambda: len(server.requests) > 2, 120, "the second step under way")
            assert terminate(job) == 143
        server.fault = None
        resumed = subprocess.run(
            cli("ask", *thread, "--json", *endpoints(server.url)),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    assert resumed.returncode == 0, resumed.stderr
    result = json.loads(resumed.stdout)
    assert [step["model"] for step in result["steps"]] == ["small", "large", "large"]
    assert result["stop_reason"] == "end_of_sequence"


def test_serve_router_stopped_by_sigterm_closes_its_chains_and_exits_0() -> None:
    with fake_model_server(fault=hold_from(0)) as server:
        command = cli("serve-router", "--port", "0", *endpoints(server.url))
        with running(command, ignore_sigint=True, stdout=subprocess.PIPE, text=True) as router:
            ready = Lines(router.stdout).wait_for(
                lambda line: line if line.startswith("serving ") else None, 120, "the ready line"
            )
            url = ready.split()[3]
            request = subprocess.Popen(
                [sys.executable, "-c", CHAT_REQUEST, url],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                wait_until(lambda: server.requests, 120, "a chain under way")
                assert terminate(router) == 0
                wait_until(lambda: server.closed, 60, "the chain's model request closed")
            finally:
                request.kill()
                request.wait()


CHAT_REQUEST = textwrap.dedent(
    """
    import sys, httpx
    body = {"model": "glimprouter", "messages": [{"role": "user", "content": "2 + 2?"}]}
    httpx.post(sys.argv[1] + "/chat/completions", json=body, timeout=600)
    """
)

# `glimprouter demo` with the vLLM launcher replaced by the fake server of the test: the demo's
# own handling of the signal (the servers stopped, then the exit status) is what is tested.
DEMO = textwrap.dedent(
    """
    import contextlib, sys
    from types import SimpleNamespace
    from glimprouter import cli
    from glimprouter.vllm_launcher import cli as serving_cli

    @contextlib.contextmanager
    def fake_serve(specs):
        try:
            yield [SimpleNamespace(base_url=sys.argv[1])] * 2
        finally:
            print("servers stopped", flush=True)

    serving_cli.serve = fake_serve
    serving_cli.local_pair_specs = lambda log: []
    sys.exit(cli.main(["demo", "--question", "What is 2 + 2?", *sys.argv[2:]]))
    """
)


def test_demo_stopped_by_sigterm_stops_its_servers() -> None:
    with fake_model_server(fault=hold_from(2)) as server:
        command = [sys.executable, "-c", DEMO, server.url, *ENDPOINT_FLAGS]
        with running(command, ignore_sigint=True, stdout=subprocess.PIPE, text=True) as demo:
            printed = Lines(demo.stdout)
            printed.wait_for(lambda line: line.startswith("step   0"), 120, "the first step")
            wait_until(lambda: len(server.requests) > 2, 120, "the second step under way")
            assert terminate(demo) == 143
            assert "servers stopped" in printed.rest(60)


def shown(event: dict) -> str:
    out = io.StringIO()
    show_event(Console(file=out, width=200, highlight=False), event, threshold=1.0)
    return out.getvalue()


STEP = {
    "event": "step",
    "index": 0,
    "model": "small",
    "entropy": 0.5,
    "score": None,
    "completion_tokens": 9,
    "wall_s": 0.1,
}


@pytest.mark.parametrize(
    "text",
    [
        "The sum is \\[ 3 + 4 = 7 \\] so \\(x\\) holds.",
        "Markup stays text: [bold]not bold[/], [/] and [red]x[/red].",
        "A trailing backslash \\",
    ],
)
def test_the_live_view_prints_model_text_verbatim(text: str) -> None:
    assert text in shown({**STEP, "text": text}).splitlines()
    answer = shown({"event": "answer", "model": "large", "text": text, "final_answer": None})
    assert text in answer.splitlines()


def test_control_characters_cannot_drive_the_terminal() -> None:
    printed = shown({**STEP, "text": "red \x1b[31mtext\x1b[0m, bell \x07, carriage \r."})
    assert "\x1b" not in printed and "\x07" not in printed and "\r" not in printed
    assert "red \\x1b[31mtext\\x1b[0m, bell \\x07, carriage \\x0d." in printed


@pytest.mark.parametrize(
    ("routing", "note"),
    [({"entropy": None, "score": None}, "no glimpse"), ({"entropy": None, "score": 6.5}, "score=")],
)
def test_steps_of_methods_that_do_not_glimpse_are_shown(routing: dict, note: str) -> None:
    assert note in shown({**STEP, **routing, "model": "large", "text": "step"})


def test_the_summary_prints_the_final_answer_verbatim() -> None:
    out = io.StringIO()
    result = {"steps": [], "final_answer": "[bold]\\frac{1}{2}", "stop_reason": "think_end"}
    show_summary(Console(file=out, width=200), {**result, "usage": {}}, 1.0)
    assert "final answer: [bold]\\frac{1}{2}" in out.getvalue()
