"""GlimpRouter: route a chain of thought between a small and a large model by glimpsing one token.

The compiled LangGraph workflow is `graph`; its settings are a `RouterContext`.

    from glimprouter import graph, RouterContext
    result = await graph.ainvoke({"question": "What is 2 + 3?"}, context=RouterContext())

Durable chains, saved after every step and resumed under the same thread id:

    async with durable_graph("threads.sqlite") as durable:
        config = thread_config(context, "my-thread")
        result = await durable.ainvoke({"question": q}, context=context, config=config,
                                       durability="sync")
        # after a crash: await durable.ainvoke(None, context=context, config=config)
"""

import importlib
from typing import Any

from glimprouter.errors import ConfigError, EndpointError, GlimpRouterError
from glimprouter.graph.builder import build_graph, graph, run_config
from glimprouter.graph.context import RouterContext
from glimprouter.graph.state import (
    InputState,
    ModelUsage,
    OutputState,
    Step,
    StopReason,
    add_usage,
)
from glimprouter.graph.threads import durable_graph, thread_config
from glimprouter.model_servers.client import check_endpoints, complete, new_chain_id
from glimprouter.prompts import continuation_messages
from glimprouter.strategies import (
    MODEL_ROLES,
    GlimpRouter,
    LargeOnly,
    ModelRole,
    RandomRouting,
    SmallOnly,
    SpecReason,
    StepEntropy,
    StepPerplexity,
    StepView,
    Strategy,
    choose_writer,
    knob,
    register_strategy,
)

# The analysis of eval results (what notebooks/analysis.ipynb uses), imported on first use:
# it brings numpy and matplotlib, which a routed run does not need.
_ANALYSIS = {
    "calibrate_threshold": "glimprouter.evals.calibrate",
    "recorded_entropies": "glimprouter.evals.calibrate",
    "load_rows": "glimprouter.evals.report",
    "markdown": "glimprouter.evals.report",
    "matched_markdown": "glimprouter.evals.report",
    "paired_markdown": "glimprouter.evals.report",
    "pareto_plot": "glimprouter.evals.report",
    "results_dirs": "glimprouter.evals.results",
}


def __getattr__(name: str) -> Any:
    if name in _ANALYSIS:
        return getattr(importlib.import_module(_ANALYSIS[name]), name)
    raise AttributeError(f"module 'glimprouter' has no attribute {name!r}")


__all__ = [
    "GlimpRouter",
    "LargeOnly",
    "RandomRouting",
    "SmallOnly",
    "SpecReason",
    "StepEntropy",
    "StepPerplexity",
    "ConfigError",
    "EndpointError",
    "GlimpRouterError",
    "InputState",
    "MODEL_ROLES",
    "ModelRole",
    "ModelUsage",
    "OutputState",
    "RouterContext",
    "Step",
    "StepView",
    "StopReason",
    "Strategy",
    "add_usage",
    "build_graph",
    "check_endpoints",
    "choose_writer",
    "complete",
    "continuation_messages",
    "durable_graph",
    "graph",
    "knob",
    "new_chain_id",
    "register_strategy",
    "run_config",
    "thread_config",
    *_ANALYSIS,
]
