"""The step_separator setting: steps end where the models end them, a blank line by default or a
single line break (the local pair), in the requests' stop, the chain the models continue, the
steps kept, and the settings `serve --local` prints."""

from __future__ import annotations

import pytest

from glimprouter import RouterContext, graph
from glimprouter.errors import ConfigError
from glimprouter.parsing import split_step
from glimprouter.vllm_launcher.cli import print_endpoints
from glimprouter.vllm_launcher.local_models import LOCAL_PAIR_STEP_SEPARATOR
from tests.fakes import context_at, fake_model_server


def one_idea_a_line(index: int, request: dict) -> dict | None:
    """A model that writes a line per step (never a blank line): two lines, then the last."""
    prefix = request["messages"][-1]["content"]
    if prefix.endswith("</think>\n\n"):
        return None
    done = prefix.removeprefix("<think>\n").count("\n")
    return {"content": f"Line {done}.\n" if done < 2 else "Done."}


@pytest.mark.parametrize("method", ["glimprouter", "small-only"])
async def test_a_line_break_ends_each_step(method: str) -> None:
    with fake_model_server(fault=one_idea_a_line) as server:
        context = context_at(server.url, step_separator="\n", method=method)
        result = await graph.ainvoke({"question": "What is 2 + 2?"}, context=context)
    assert [step["text"] for step in result["steps"]] == ["Line 0.", "Line 1.", "Done."]
    assert [step["finish"] for step in result["steps"]][:2] == ["separator", "separator"]
    stops = [r["stop"] for r in server.requests if r.get("stop")]
    assert len(stops) >= 3 and all(stop == ["\n"] for stop in stops)
    answer_prefix = server.requests[-1]["messages"][-1]["content"]
    assert answer_prefix == "<think>\nLine 0.\nLine 1.\nDone.\n</think>\n\n"


def test_split_step_uses_the_separator_given() -> None:
    assert split_step("a\n", "stop", "\n") == ("a", "separator")
    assert split_step("a\n", "stop") == ("a\n", "end_of_sequence")


def test_the_local_pairs_separator_pastes_into_a_context(capsys, monkeypatch) -> None:
    print_endpoints([], LOCAL_PAIR_STEP_SEPARATOR)
    out = capsys.readouterr().out.splitlines()
    line = next(text for text in out if "STEP_SEPARATOR" in text)
    name, quoted = line.split()[1].split("=", 1)
    monkeypatch.setenv(name, quoted.strip("'"))  # what the shell's single quotes leave
    assert RouterContext().step_separator == LOCAL_PAIR_STEP_SEPARATOR == "\n"


def test_an_unknown_separator_names_the_setting() -> None:
    with pytest.raises(ConfigError, match="step_separator='x' must be"):
        RouterContext(step_separator="x")
