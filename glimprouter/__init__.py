"""GlimpRouter: route a chain of thought between a small and a large model by glimpsing one token.

The compiled LangGraph workflow is `graph`; its settings are a `RouterContext`.

    from glimprouter import graph, RouterContext
    result = await graph.ainvoke({"question": "What is 2 + 3?"}, context=RouterContext())
"""

from glimprouter.errors import ConfigError, EndpointError, GlimpRouterError
from glimprouter.graph.builder import build_graph, graph, run_config
from glimprouter.graph.context import RouterContext
from glimprouter.graph.state import InputState, OutputState, Step

__all__ = [
    "ConfigError",
    "EndpointError",
    "GlimpRouterError",
    "InputState",
    "OutputState",
    "RouterContext",
    "Step",
    "build_graph",
    "graph",
    "run_config",
]
