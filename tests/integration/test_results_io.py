"""results.jsonl and config.json cannot be torn: reading is tolerant and never writes, one eval
writes at a time, the pin is written whole and names the models the servers serve."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from glimprouter.errors import ConfigError
from glimprouter.evals.calibrate import recorded_entropies
from glimprouter.evals.datasets import Problem
from glimprouter.evals.report import load_rows
from glimprouter.evals.results import (
    CONFIG_FILE,
    RESULTS_FILE,
    ResultsWriter,
    pin_configuration,
    read_results,
    run_identity,
)
from glimprouter.evals.runner import run_eval
from glimprouter.graph.context import RouterContext
from tests.fakes import FakeModelServer, context_at, fake_model_server

GRADED = {
    "correct": True,
    "latency_s": 1.0,
    "steps": 1,
    "large_steps": 0,
    "small_completion_tokens": 1,
    "large_completion_tokens": 0,
    "small_requests": 1,
    "large_requests": 0,
    "trace": [{"entropy": 0.5}],
}


def _line(problem_id: str, **fields: object) -> bytes:
    record = {"dataset": "d", "problem_id": problem_id, "repeat": 0, **GRADED, **fields}
    return (json.dumps(record, ensure_ascii=False) + "\n").encode()


def _results(tmp_path: Path, content: bytes) -> Path:
    pin_configuration(tmp_path, run_identity("d", RouterContext(), 1))
    path = tmp_path / RESULTS_FILE
    path.write_bytes(content)
    return path


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(_line("torn", answer="é")[:-5], id="torn inside a multibyte character"),
        pytest.param(b"\n", id="blank"),
        pytest.param(b"not json\n", id="not json"),
        pytest.param(b"\xff\xfe{}\n", id="not utf-8"),
        pytest.param(b"[" * 100_000 + b"\n", id="nested past the parser"),
        pytest.param(b'{"problem_id": "x"}\n', id="not a record"),
        pytest.param(b"[1, 2]\n", id="not an object"),
    ],
)
def test_a_bad_line_in_the_middle_loses_nothing_after_it(tmp_path: Path, damage: bytes) -> None:
    torn = damage if damage.endswith(b"\n") else damage + b"\n"
    path = _results(tmp_path, _line("a") + torn + _line("b", answer="ü"))
    before = path.read_bytes()
    assert [r["problem_id"] for r in read_results(tmp_path)] == ["a", "b"]
    [row] = load_rows([tmp_path])  # report
    assert row.records == 2
    assert recorded_entropies([tmp_path]) == [0.5, 0.5]  # calibrate
    assert path.read_bytes() == before  # reading commands never write


def test_two_writers_on_one_directory_are_refused(tmp_path: Path) -> None:
    with ResultsWriter(tmp_path) as first:
        with pytest.raises(ConfigError, match="another eval is writing to .*--output"):
            ResultsWriter(tmp_path)
        first.write(json.loads(_line("a")))
    with ResultsWriter(tmp_path) as second:  # free again once the first is closed
        second.write(json.loads(_line("b")))
    assert [r["problem_id"] for r in read_results(tmp_path)] == ["a", "b"]


async def test_a_second_eval_on_a_directory_in_use_is_refused(tmp_path: Path) -> None:
    problems = [Problem("d", "1", "What is 2 + 2?", "math", "4")]
    with fake_model_server() as server:
        with ResultsWriter(tmp_path):  # an eval in flight
            with pytest.raises(ConfigError, match="another eval is writing"):
                await run_eval(problems, context_at(server.url), tmp_path, dataset="d")
        tally = await run_eval(problems, context_at(server.url), tmp_path, dataset="d")
    assert tally.done == 1 and len(read_results(tmp_path)) == 1


def test_a_model_text_that_is_not_unicode_is_recorded(tmp_path: Path) -> None:
    with ResultsWriter(tmp_path) as writer:
        writer.write({**json.loads(_line("a")), "answer": "half a pair \ud800"})
    assert read_results(tmp_path)[0]["answer"] == "half a pair \ud800"


def test_config_is_replaced_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pin_configuration(tmp_path, run_identity("d", RouterContext(), 1))
    original = (tmp_path / CONFIG_FILE).read_text()

    def killed(*args: object) -> None:
        raise KeyboardInterrupt  # killed between writing the new pin and putting it in place

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        pin_configuration(tmp_path, run_identity("d", RouterContext(), 3))
    assert (tmp_path / CONFIG_FILE).read_text() == original


def test_a_run_pinned_before_a_setting_joined_the_identity_resumes_at_its_default(
    tmp_path: Path,
) -> None:
    pin_configuration(tmp_path, run_identity("d", RouterContext(), 1))
    pinned = json.loads((tmp_path / CONFIG_FILE).read_text())
    del pinned["max_chain_prompt_tokens"]  # as a release before that setting wrote it
    (tmp_path / CONFIG_FILE).write_text(json.dumps(pinned))
    pin_configuration(tmp_path, run_identity("d", RouterContext(), 1))
    with pytest.raises(ConfigError, match="max_chain_prompt_tokens: 1000000 there, 5000 now"):
        pin_configuration(
            tmp_path, run_identity("d", RouterContext(max_chain_prompt_tokens=5000), 1)
        )


class _ServerOf(FakeModelServer):
    """The fake, reporting the model behind each served name as vLLM does (`root`)."""

    def do_GET(self):
        data = [{"id": name, "root": self.server.roots[name]} for name in ("small", "large")]
        self._json(200, {"object": "list", "data": data})


async def test_the_pin_names_the_models_not_only_their_served_names(tmp_path: Path) -> None:
    problems = [Problem("d", "1", "What is 2 + 2?", "math", "4")]
    with fake_model_server() as server:
        server.RequestHandlerClass = _ServerOf
        server.roots = {"small": "Qwen/Qwen3-0.6B", "large": "Qwen/Qwen3-8B"}
        await run_eval(problems, context_at(server.url), tmp_path, dataset="d")
        assert json.loads((tmp_path / CONFIG_FILE).read_text())["large_model_served"] == (
            "Qwen/Qwen3-8B"
        )
        server.roots["large"] = "Qwen/Qwen3-4B"  # another model behind the same served name
        with pytest.raises(ConfigError, match="large_model_served: 'Qwen/Qwen3-8B' there"):
            await run_eval(problems, context_at(server.url), tmp_path, dataset="d")
