"""Answering one question from the command line or a notebook: `ask()` runs the graph, once or
as a saved thread that a later call resumes, showing each step as it is written."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from langgraph.graph.state import CompiledStateGraph
from rich.console import Console

from glimprouter.graph.builder import graph, run_config
from glimprouter.graph.context import RouterContext
from glimprouter.graph.invoke import output_of, run_question
from glimprouter.graph.state import OutputState
from glimprouter.graph.tenants import SINGLE_TENANT
from glimprouter.graph.threads import (
    DURABILITY,
    checkpoint_db_from_env,
    open_threads,
    plan_thread,
    thread_config,
)
from glimprouter.live_view import show_event, show_summary
from glimprouter.model_servers.client import check_endpoints
from glimprouter.prompts import render_question
from glimprouter.vllm_launcher.local_models import cache_dir

SAMPLE_QUESTION = (
    "A bakery sells muffins for $3 each and cookies for $2 each. Maya buys 4 muffins and "
    "some cookies and pays $20 in total. How many cookies did she buy?"
)


def default_checkpoint_db() -> str | Path:
    """Where `ask --thread-id` saves chains unless told otherwise."""
    return checkpoint_db_from_env() or cache_dir() / "threads.sqlite"


async def ask(
    question: str | None,
    context: RouterContext,
    *,
    task: str = "math",
    console: Console | None = None,
    thread_id: str | None = None,
    checkpoint_db: str | Path | None = None,
) -> OutputState:
    """Run the graph on one question, printing each step as it is written when `console` is set.

    With `thread_id` the chain is saved after every step in `checkpoint_db`: asking again under
    the same id resumes it from its last finished step (`question` None resumes only). The
    thread is the single tenant's, as on a serve-router with no API keys.
    """
    if question is not None:
        render_question(question, task)  # refuse an empty question before contacting a server
    if thread_id is None:
        await check_endpoints(context)
        run_input = {"question": question, "task": task}
        return await _watched_run(graph, run_input, run_config(context), context, console)
    checkpoint_db = checkpoint_db or default_checkpoint_db()
    async with (
        open_threads(checkpoint_db) as store,
        store.held(SINGLE_TENANT, thread_id) as checkpoint_id,
    ):
        durable = store.graph
        plan = await plan_thread(durable, checkpoint_id, question, task, name=thread_id)
        config = thread_config(context, checkpoint_id)
        if plan.state == "finished":
            saved = output_of((await durable.aget_state(config)).values)
            if console is not None:
                console.print(f"thread {thread_id} is finished; its saved result:")
                show_summary(console, saved, 0.0)
            return saved
        await check_endpoints(context)
        if console is not None and plan.state == "unfinished":
            console.print(f"resuming thread {thread_id} after {plan.steps_done} saved steps")
        return await _watched_run(
            durable, plan.run_input, config, context, console, durability=DURABILITY
        )


async def _watched_run(
    runnable: CompiledStateGraph,
    run_input: dict[str, Any] | None,
    config: dict[str, Any],
    context: RouterContext,
    console: Console | None,
    **stream_options: Any,
) -> OutputState:
    def show(event: dict[str, Any]) -> None:
        if console is not None:
            show_event(console, event, context.threshold)

    started = time.perf_counter()
    result = await run_question(
        runnable, run_input, context, config, on_event=show, **stream_options
    )
    if console is not None:
        show_summary(console, result, time.perf_counter() - started)
    return result
