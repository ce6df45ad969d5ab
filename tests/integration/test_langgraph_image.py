"""The image `langgraph build` would build for langgraph.json, written by the langgraph CLI (a
subprocess) without Docker."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.paths import REPO


def test_langgraph_json_gives_a_langgraph_server_image(tmp_path):
    """`langgraph dockerfile` (what `langgraph build` builds, written without Docker): the image
    installs this package and serves every graph of langgraph.json."""
    # The environment's own CLI, beside its interpreter: CI runs the tests without the venv on PATH.
    cli = Path(sys.executable).with_name("langgraph")
    if not cli.exists():
        pytest.skip('langgraph-cli is not installed: pip install -e ".[studio]"')
    config = json.loads((REPO / "langgraph.json").read_text())
    written = subprocess.run(
        [cli, "dockerfile", "-c", str(REPO / "langgraph.json"), str(tmp_path / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ | {"LANGGRAPH_CLI_NO_ANALYTICS": "1"},
    )
    assert written.returncode == 0, written.stdout + written.stderr
    dockerfile = (tmp_path / "Dockerfile").read_text()
    assert "ADD . /deps/" in dockerfile and "pip install" in dockerfile
    served = json.loads(re.search(r"LANGSERVE_GRAPHS='(.*)'", dockerfile).group(1))
    assert set(served) == set(config["graphs"])
    for name, target in config["graphs"].items():
        assert served[name].endswith(target.removeprefix("."))
