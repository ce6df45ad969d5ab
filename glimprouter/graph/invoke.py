"""Running the graph on one question, the way every entry point does (CLI, evals, endpoint).

A model server that fails in the middle of a chain (after the client's bounded retries) does not
lose the chain: the run ends with stop_reason "endpoint_error", the one-line error, and every step
written before the failure. Under a checkpointer the failed step is the thread's next task, so
running the thread again once the server is back continues from there.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from langgraph.graph.state import CompiledStateGraph

from glimprouter.errors import EndpointError
from glimprouter.graph.context import RouterContext
from glimprouter.graph.state import OutputState

StepEvent = dict[str, Any]


def output_of(values: dict[str, Any]) -> OutputState:
    """The output fields of a run's (final or last saved) state."""
    return {key: values.get(key) for key in OutputState.__annotations__}  # type: ignore[return-value]


async def run_question(
    runnable: CompiledStateGraph,
    run_input: dict[str, Any] | None,
    context: RouterContext,
    config: dict[str, Any],
    *,
    on_event: Callable[[StepEvent], None] | None = None,
    **stream_options: Any,
) -> OutputState:
    """Run `runnable` to its end and return its output; `on_event` sees each step and the answer
    as they are written. `run_input` None continues a checkpointed thread."""
    values: dict[str, Any] = {}
    try:
        async for mode, chunk in runnable.astream(
            run_input,
            context=context,
            config=config,
            stream_mode=["custom", "values"],
            **stream_options,
        ):
            if mode == "values":
                values = chunk
            elif on_event is not None:
                on_event(chunk)
    except EndpointError as error:
        return {**output_of(values), "stop_reason": "endpoint_error", "error": str(error)}
    return output_of(values)
