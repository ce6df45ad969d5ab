"""Each RouterContext setting is declared once, in its field: the command line's flags, the
endpoint's per-request knobs and their limits, an eval's identity, Studio's schema and
docs/settings.md (tests/test_docs.py) all come from that declaration."""

from __future__ import annotations

import argparse
import dataclasses

from glimprouter.cli import build_parser
from glimprouter.context_flags import add_context_flags
from glimprouter.endpoint.limits import RouterLimits
from glimprouter.endpoint.protocol import request_model
from glimprouter.evals.results import run_identity
from glimprouter.graph.context import RouterContext
from glimprouter.graph.settings import (
    cli_flags,
    identity_fields,
    request_knobs,
    request_limits,
    setting,
)
from glimprouter.strategies import BUILT_INS


@dataclasses.dataclass(kw_only=True)
class WithBeams(RouterContext):
    beams: int | None = dataclasses.field(
        default=None,
        metadata=setting(
            "Beams per step.",
            flag_help="beams per step",
            request=True,
            limit=("max_beams", "--max-beams"),
            identity=True,
        ),
    )


def test_a_new_setting_reaches_every_surface_from_its_one_declaration():
    assert ("--beams", "beams", int, "beams per step") in cli_flags(WithBeams)
    assert request_knobs(WithBeams)["beams"] is int
    assert request_limits(WithBeams)["beams"] == ("max_beams", "--max-beams")
    assert "beams" in identity_fields(WithBeams)
    base_flags = cli_flags(RouterContext)
    assert "beams" not in {name for _, name, _, _ in base_flags}  # the base class is untouched


def test_every_surface_takes_each_declared_setting():
    # What each surface accepts, read from the surface itself (its parser, its pin), against the
    # fields' declarations.
    parser = argparse.ArgumentParser()
    add_context_flags(parser)
    dests = {action.dest for action in parser._actions}
    assert {f.name for f in dataclasses.fields(RouterContext)} <= dests
    limit_flags = [arg for _, flag in request_limits(RouterContext).values() for arg in (flag, "7")]
    router_args = build_parser().parse_args(["serve-router", *limit_flags])
    limits = {f.name for f in dataclasses.fields(RouterLimits)}
    for attribute, _ in request_limits(RouterContext).values():
        assert attribute in limits and getattr(router_args, attribute) == 7
    assert set(request_knobs(RouterContext)) <= set(request_model().model_fields)
    identity = run_identity("math500", RouterContext(), repeats=1)
    assert set(identity_fields(RouterContext)) <= set(identity)


def test_secrets_and_endpoints_stay_off_requests_and_out_of_the_identity():
    knobs, identity = request_knobs(RouterContext), identity_fields(RouterContext)
    for name in ("small_base_url", "large_base_url", "small_api_key", "large_api_key"):
        assert name not in knobs and name not in identity
        assert name not in run_identity("math500", RouterContext(), repeats=1)
    assert "request_timeout" not in knobs and "max_retries" not in knobs
    assert all(not f.repr for f in dataclasses.fields(RouterContext) if f.name.endswith("_api_key"))


def test_the_method_setting_names_the_registered_strategies():
    (method,) = [f for f in dataclasses.fields(RouterContext) if f.name == "method"]
    assert all(cls.name in method.metadata["description"] for cls in BUILT_INS)
