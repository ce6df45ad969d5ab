"""One line per way a model server fails, naming the setting or the server flag to change:
shared by the requests (model_servers.client) and the start-up check (model_servers.startup)."""

from __future__ import annotations

from glimprouter.errors import EndpointError
from glimprouter.graph.context import ModelRole, RouterContext


class ReplicaDown(EndpointError):
    """One replica failed in a way another replica of the role may not (it is unreachable, does
    not answer in time, answers 5xx after the retries, or cuts its streams off): the request
    moves on to the role's next replica."""


def url_setting(role: ModelRole) -> str:
    return f"--{role}-url / GLIMPROUTER_{role.upper()}_BASE_URL"


def timed_out(context: RouterContext, role: ModelRole) -> ReplicaDown:
    return ReplicaDown(
        f"the {role} model server at {context.shown_url(role)} did not answer within "
        f"{context.request_timeout:g} s: check it is up, or raise request_timeout "
        "(GLIMPROUTER_REQUEST_TIMEOUT)"
    )


def no_logprobs(context: RouterContext, role: ModelRole) -> EndpointError:
    return EndpointError(
        f"the {role} model server at {context.shown_url(role)} returned no usable "
        f"logprobs: point {url_setting(role)} at a vLLM (or other) server that returns "
        "top_logprobs"
    )


# Finish reasons of a request the server gave up on: its text is not a step.
_FAILED_FINISH = ("abort", "error")


def check_finish(finish_reason: str | None, context: RouterContext, role: ModelRole) -> None:
    if finish_reason in _FAILED_FINISH:
        raise EndpointError(
            f"the {role} model server at {context.shown_url(role)} gave up on a request "
            f"(finish_reason {finish_reason!r}): check the server's log"
        )


def unreachable(context: RouterContext, role: ModelRole) -> ReplicaDown:
    return ReplicaDown(
        f"cannot reach the {role} model server at {context.shown_url(role)}: start it "
        f"(glimprouter serve) or fix {url_setting(role)}"
    )


def bad_key(context: RouterContext, role: ModelRole) -> EndpointError:
    return EndpointError(
        f"the {role} model server at {context.shown_url(role)} refused the API key: set "
        f"--{role}-api-key / GLIMPROUTER_{role.upper()}_API_KEY"
    )


def unknown_model(context: RouterContext, role: ModelRole, served: list[str]) -> EndpointError:
    model = context.endpoint(role)[1]
    return EndpointError(
        f"the {role} model server at {context.shown_url(role)} does not serve {model!r}; it serves "
        f"{served}: set --{role}-model / GLIMPROUTER_{role.upper()}_MODEL"
    )


def every_replica_down(role: ModelRole, failures: list[ReplicaDown]) -> EndpointError:
    """One line naming each replica of `role` and how it failed."""
    if len(failures) == 1:
        return failures[0]
    return EndpointError(
        f"all {len(failures)} replicas of the {role} model failed: "
        + "; ".join(str(failure) for failure in failures)
    )
