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

from glimprouter.errors import ConfigError, EndpointError, GlimpRouterError
from glimprouter.graph.builder import build_graph, graph, run_config
from glimprouter.graph.context import RouterContext
from glimprouter.graph.state import InputState, OutputState, Step
from glimprouter.graph.threads import durable_graph, thread_config
from glimprouter.strategies import (
    ModelRole,
    StepView,
    Strategy,
    choose_writer,
    knob,
    register_strategy,
)

__all__ = [
    "ConfigError",
    "EndpointError",
    "GlimpRouterError",
    "InputState",
    "ModelRole",
    "OutputState",
    "RouterContext",
    "Step",
    "StepView",
    "Strategy",
    "build_graph",
    "choose_writer",
    "durable_graph",
    "graph",
    "knob",
    "register_strategy",
    "run_config",
    "thread_config",
]
