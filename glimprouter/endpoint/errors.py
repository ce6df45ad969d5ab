"""Error mapping: the OpenAI-shaped error object, and what a client is told about an error of a
run (400 bad input, 502 failing model server, 500 anything else)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from glimprouter.endpoint.protocol import ErrorObject, ErrorResponse, WrittenSoFar
from glimprouter.errors import ConfigError, EndpointError
from glimprouter.graph.thread_locks import ThreadBusy
from glimprouter.prompts import STEP_SEPARATOR
from glimprouter.strategies import MODEL_ROLES

if TYPE_CHECKING:  # imported where a response is made: serve-router's flags need no [serve]
    from starlette.responses import JSONResponse

log = logging.getLogger(__name__)


class RequestError(Exception):
    """An OpenAI-style error: HTTP status, message, the offending parameter, a code, and any
    headers its response carries."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        kind: str = "invalid_request_error",
        written: WrittenSoFar | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.written = written
        self.headers = headers or {}
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.kind = kind

    def body(self) -> dict[str, Any]:
        """The JSON error object, as OpenAI's API and SDKs shape it."""
        error = ErrorObject(message=self.message, type=self.kind, param=self.param, code=self.code)
        body = ErrorResponse(error=error, glimprouter=self.written)
        return body.model_dump(mode="json", exclude=None if self.written else {"glimprouter"})

    def response(self) -> JSONResponse:
        """The error as an HTTP response."""
        from starlette.responses import JSONResponse

        # A failed model server was already retried (max_retries): the OpenAI SDKs honour this
        # header instead of retrying the whole chain of thought.
        retry = {"x-should-retry": "false"} if self.status == 502 else {}
        return JSONResponse(self.body(), status_code=self.status, headers=retry | self.headers)


class ChainCut(EndpointError):
    """A model server failed mid-chain (after its retries): the run's output so far."""

    def __init__(self, output: dict[str, Any]) -> None:
        super().__init__(output["error"])
        self.output = output


def failed_role(message: str) -> str:
    """The model role an endpoint error names ("the large model server at ...")."""
    return next((role for role in MODEL_ROLES if f"{role} model" in message), "unknown")


def model_server_failed(message: str) -> str:
    """What a client is told of a model server's failure (`message`, for the log)."""
    role = failed_role(message)
    which = "a model server" if role == "unknown" else f"the {role} model's server"
    return f"{which} failed (after the router's retries); the router's log has the details"


def as_request_error(error: Exception, step_separator: str = STEP_SEPARATOR) -> RequestError:
    """What a client is told about an error of a run: bad input is a 400, a failing model server
    a 502, anything else a 500 whose details stay in the server's log."""
    if isinstance(error, RequestError):
        return error
    if isinstance(error, ThreadBusy):
        log.info("thread_busy: %s", error)  # it names the database: for the log only
        return RequestError(
            409,
            "this thread_id is being run by another request: send it again once that one ends",
            param="thread_id",
            code="thread_busy",
        )
    if isinstance(error, ConfigError):
        return RequestError(400, str(error), code="invalid_value")
    if isinstance(error, EndpointError):
        # The message names the backend's URL (and may quote its reply): the log keeps it, the
        # client learns which model failed.
        log.warning("model server error: %s", error)
    if isinstance(error, ChainCut):
        return RequestError(
            502,
            model_server_failed(str(error)),
            code="model_server_error",
            kind="server_error",
            written=written_so_far(error.output.get("steps") or [], step_separator),
        )
    if isinstance(error, EndpointError):
        return RequestError(
            502, model_server_failed(str(error)), code="model_server_error", kind="server_error"
        )
    log.error("unexpected error in a routed run", exc_info=error)
    return RequestError(
        500, "internal error in the router; its log has the details", kind="server_error"
    )


def written_so_far(steps: list[dict[str, Any]], step_separator: str) -> WrittenSoFar:
    """What a cut chain had written (its steps joined as the model wrote them), for its error."""
    texts = [step["text"] for step in steps]
    return WrittenSoFar(reasoning_content=step_separator.join(texts), steps=len(texts))
