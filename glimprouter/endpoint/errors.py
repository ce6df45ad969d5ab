"""Error mapping: the OpenAI-shaped error object, and what a client is told about an error of a
run (400 bad input, 502 failing model server, 500 anything else)."""

from __future__ import annotations

import logging
from typing import Any

from starlette.responses import JSONResponse

from glimprouter.endpoint.protocol import ErrorObject, ErrorResponse
from glimprouter.errors import ConfigError, EndpointError
from glimprouter.graph.threads import ThreadBusy

log = logging.getLogger(__name__)


class RequestError(Exception):
    """An OpenAI-style error: HTTP status, message, the offending parameter and a code."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        kind: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.kind = kind

    def body(self) -> dict[str, Any]:
        """The JSON error object, as OpenAI's API and SDKs shape it."""
        error = ErrorObject(message=self.message, type=self.kind, param=self.param, code=self.code)
        return ErrorResponse(error=error).model_dump(mode="json")

    def response(self) -> JSONResponse:
        """The error as an HTTP response."""
        # A failed model server was already retried (max_retries): the OpenAI SDKs honour this
        # header instead of retrying the whole chain of thought.
        headers = {"x-should-retry": "false"} if self.status == 502 else None
        return JSONResponse(self.body(), status_code=self.status, headers=headers)


def as_request_error(error: Exception) -> RequestError:
    """What a client is told about an error of a run: bad input is a 400, a failing model server
    a 502, anything else a 500 whose details stay in the server's log."""
    if isinstance(error, RequestError):
        return error
    if isinstance(error, ThreadBusy):
        return RequestError(409, str(error), param="thread_id", code="thread_busy")
    if isinstance(error, ConfigError):
        return RequestError(400, str(error), code="invalid_value")
    if isinstance(error, EndpointError):
        return RequestError(502, str(error), code="model_server_error", kind="server_error")
    log.error("unexpected error in a routed run", exc_info=error)
    return RequestError(
        500, "internal error in the router; its log has the details", kind="server_error"
    )
