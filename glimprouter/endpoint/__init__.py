"""`glimprouter serve-router`: GlimpRouter as one model behind an OpenAI-compatible endpoint.

A thin layer over the compiled graph, as RouteLLM's server is over its controller. The last user
message is the question; routing knobs come in the request body (what the OpenAI SDK's
`extra_body` sends) and are checked against the server's limits; the chain of thought comes back
as `reasoning_content` and the answer as `content`, step by step when streamed. Every error is an
OpenAI-style error object, never a traceback.

One module per job, bottom to top: `knobs` (accepted fields, knobs, limits), `errors` (the
OpenAI error object), `messages` (the question), `requests` (validation), `responses` (shaping),
`load` (concurrency), `runs` (the graph run of one request), `app` (ASGI routes and SSE),
`server` (socket and uvicorn), `command` (the CLI flags).
"""

from glimprouter.endpoint.app import create_app
from glimprouter.endpoint.knobs import RouterLimits
from glimprouter.endpoint.server import serve_router

__all__ = ["RouterLimits", "create_app", "serve_router"]
