"""`glimprouter serve-router`: GlimpRouter as one model behind an OpenAI-compatible endpoint.

A thin layer over the compiled graph, as RouteLLM's server is over its controller. The last user
message is the question; routing knobs come in the request body (what the OpenAI SDK's
`extra_body` sends) and are checked against the server's limits; the chain of thought comes back
as `reasoning_content` and the answer as `content`, step by step when streamed. Every error is an
OpenAI-style error object, never a traceback.

One module per job, bottom to top: `protocol` (the wire format as pydantic models: the request,
its knobs derived from the settings, the responses, the error object), `limits` (what bounds the
knobs, by default to no more cost than the server's own settings, and the bounds on load and
slow clients), `keys` (who may use it), `errors` (errors as OpenAI error objects), `hosts` (which
Host it answers), `messages` (the question), `requests` (validation), `responses` (shaping),
`openapi` (the document, from the protocol), `load` (concurrency, the waiting queue, streams per
key), `metrics` (Prometheus), `chains` (kept chains), `runs` (a request's run), `app` (ASGI routes
and SSE), `connections` (slow clients at the connection), `server` (socket, uvicorn and its
workers), `command` (the CLI flags).

Starlette with pydantic models rather than FastAPI: the body is read by the app itself (a size
bound, no NaN) and every refusal keeps its OpenAI shape and wording, which FastAPI's own
validation (422, its own error format) would have to be overridden to give; the models give
the validation and the OpenAPI document all the same.
"""

import importlib
from typing import Any

# Loaded on first use: the CLI imports `command` (its flags) for `glimprouter --help`, which must
# not need the [serve] extra (Starlette, uvicorn) that `app` and `server` import.
_EXPORTS = {
    "RouterLimits": "glimprouter.endpoint.limits",
    "create_app": "glimprouter.endpoint.app",
    "serve_router": "glimprouter.endpoint.server",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
