"""A replica that dies during the start-up check (a rolling restart, a node lost at the wrong
moment) is that replica's failure: `ask`, `eval` and `serve-router` warn and run on the role's
other replicas; only a role with no replica left stops the run, in one line naming each."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from glimprouter.cli import main
from glimprouter.errors import EndpointError
from glimprouter.evals.results import read_results
from glimprouter.model_servers.client import check_endpoints
from tests.fakes import context_at, fake_model_server
from tests.routers import one_reply

DEATHS = ["at_first_post", "mid_reply"]
SMALL_BUDGETS = ["--step-max-tokens", "16", "--token-budget", "64", "--answer-max-tokens", "16",
                 "--max-retries", "0", "--request-timeout", "10"]  # fmt: skip


def _endpoints(dying_url: str, healthy_url: str) -> list[str]:
    """The small role on the dying replica and a healthy one; the large on the healthy one."""
    return ["--small-url", f"{dying_url},{healthy_url}", "--large-url", healthy_url]


@pytest.mark.parametrize("death", DEATHS)
async def test_a_replica_dying_at_the_canary_is_a_warning_naming_it(death):
    with fake_model_server() as healthy, fake_model_server(dies=death) as dying:
        context = context_at(healthy.url, small_base_url=[dying.url, healthy.url])
        (warning,) = (await check_endpoints(context)).warnings
    assert f"the small model server at {dying.url}" in warning and "\n" not in warning
    assert "chains go to the other small replicas" in warning


@pytest.mark.parametrize("death", DEATHS)
async def test_a_role_whose_every_replica_dies_at_the_canary_is_refused_naming_each(death):
    with fake_model_server() as healthy:
        with fake_model_server(dies=death) as one, fake_model_server(dies=death) as other:
            context = context_at(healthy.url, large_base_url=[one.url, other.url])
            with pytest.raises(EndpointError) as refused:
                await check_endpoints(context)
    message = str(refused.value)
    assert "all 2 replicas of the large model failed" in message and "\n" not in message
    assert one.url in message and other.url in message


@pytest.mark.parametrize("death", DEATHS)
def test_ask_runs_on_when_a_replica_dies_at_the_start_up_check(death, capsys):
    with fake_model_server() as healthy, fake_model_server(dies=death) as dying:
        status = main(["ask", "What is 2 + 2?", "--json", "--threshold", "1.0",
                       *_endpoints(dying.url, healthy.url), *SMALL_BUDGETS])  # fmt: skip
    printed = capsys.readouterr()
    assert status == 0, printed.err
    result = json.loads(printed.out)
    assert result["error"] is None and result["final_answer"] == "4"
    assert {step["replica"] for step in result["steps"]} == {healthy.url}


@pytest.mark.parametrize("death", DEATHS)
def test_eval_runs_on_when_a_replica_dies_at_the_start_up_check(death, tmp_path: Path, capsys):
    data = tmp_path / "problems.jsonl"
    data.write_text("".join(json.dumps({"problem": f"What is {n}?", "answer": "4"}) + "\n"
                            for n in range(4)))  # fmt: skip
    with fake_model_server() as healthy, fake_model_server(dies=death) as dying:
        status = main(["eval", "--data-file", str(data), "--output", str(tmp_path / "run"),
                       "--concurrency", "2", *_endpoints(dying.url, healthy.url),
                       *SMALL_BUDGETS])  # fmt: skip
    assert status == 0, capsys.readouterr().err
    records = read_results(tmp_path / "run")
    assert len(records) == 4 and not any(record.get("error") for record in records)
    assert all(record["correct"] for record in records)


@pytest.mark.parametrize("death", DEATHS)
def test_serve_router_starts_and_answers_when_a_replica_dies_at_the_start_up_check(death):
    with fake_model_server() as healthy, fake_model_server(dies=death) as dying:
        command = [sys.executable, "-m", "glimprouter.cli", "serve-router", "--port", "0",
                   *_endpoints(dying.url, healthy.url), *SMALL_BUDGETS]  # fmt: skip
        _, reply, everything = one_reply(command, "2 + 2?")
    assert reply.status_code == 200, reply.text
    assert "\\boxed{4}" in reply.json()["choices"][0]["message"]["content"]
    assert f"the small model server at {dying.url}" in everything
