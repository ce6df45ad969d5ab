"""Each RouterContext setting is declared once, in its field: the command line's flags, the
endpoint's per-request knobs and their limits, an eval's identity, Studio's schema and the
README's table all come from that declaration."""

from __future__ import annotations

import argparse
import dataclasses
import re
from pathlib import Path

from glimprouter.context_flags import CONTEXT_FLAGS, add_context_flags
from glimprouter.endpoint.knobs import KNOBS, LIMITED, RouterLimits
from glimprouter.evals.results import CONFIG_FIELDS
from glimprouter.graph.context import (
    RouterContext,
    cli_flags,
    identity_fields,
    request_knobs,
    request_limits,
    setting,
)
from glimprouter.strategies import STRATEGIES

README = Path(__file__).resolve().parents[1] / "README.md"


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
    assert "beams" not in {name for _, name, _, _ in cli_flags()}  # the base class is untouched


def test_the_surfaces_are_the_declarations():
    assert CONTEXT_FLAGS == cli_flags()
    assert KNOBS == request_knobs() and LIMITED == request_limits()
    assert CONFIG_FIELDS == identity_fields()
    limits = {f.name for f in dataclasses.fields(RouterLimits)}
    assert {attribute for attribute, _ in LIMITED.values()} <= limits
    parser = argparse.ArgumentParser()
    add_context_flags(parser)
    dests = {action.dest for action in parser._actions}
    assert {f.name for f in dataclasses.fields(RouterContext)} <= dests


def test_secrets_and_endpoints_stay_off_requests_and_out_of_the_identity():
    for name in ("small_base_url", "large_base_url", "small_api_key", "large_api_key"):
        assert name not in KNOBS and name not in CONFIG_FIELDS
    assert "request_timeout" not in KNOBS and "max_retries" not in KNOBS
    assert all(not f.repr for f in dataclasses.fields(RouterContext) if f.name.endswith("_api_key"))


def test_the_method_setting_names_the_registered_strategies():
    (method,) = [f for f in dataclasses.fields(RouterContext) if f.name == "method"]
    assert all(name in method.metadata["description"] for name in STRATEGIES)


def test_the_readme_settings_table_lists_every_setting():
    text = README.read_text()
    table = text[text.index("## Settings") :].split("\n## ", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    listed = {name for row in rows for name in re.findall(r"`(\w+)`", row.split("|")[1])}
    assert listed == {f.name for f in dataclasses.fields(RouterContext)}
