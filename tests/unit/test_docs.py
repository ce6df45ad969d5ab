"""The docs stay what the README promises: a README of a screen or two whose links lead
somewhere, a settings reference generated from the declarations and never stale, and benchmark
tables whose cells fit a line."""

from __future__ import annotations

import importlib.util
import re

from tests.paths import REPO

ROOT = REPO
README = ROOT / "README.md"
PAGES = [README, ROOT / "benchmarks" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def load_settings_reference():
    spec = importlib.util.spec_from_file_location(
        "settings_reference", ROOT / "scripts" / "settings_reference.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_settings_reference_is_what_the_declarations_generate():
    reference = load_settings_reference()
    assert reference.REFERENCE.read_text(encoding="utf-8") == reference.render(), (
        "docs/settings.md is stale: run python scripts/settings_reference.py"
    )


def test_the_settings_reference_has_one_row_per_setting_with_its_flag():
    from glimprouter.context_flags import CONTEXT_FLAGS
    from glimprouter.graph.context import RouterContext

    text = load_settings_reference().render()
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    assert [row.split("`")[1] for row in rows] == list(RouterContext.__dataclass_fields__)
    for flag, name, _, _ in CONTEXT_FLAGS:
        (row,) = [row for row in rows if row.startswith(f"| `{name}` |")]
        assert f"`{flag}`" in row and f"`GLIMPROUTER_{name.upper()}`" in row


def test_the_readme_fits_a_screen_or_two_and_starts_with_the_two_commands():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 250
    assert lines[3].startswith("bash scripts/demo.sh") and lines[4].startswith("bash .ci/run")


def test_every_relative_link_of_the_docs_leads_to_a_file_and_its_section():
    for page in PAGES:
        for target in LINK.findall(page.read_text(encoding="utf-8")):
            if target.startswith(("http://", "https://")):
                continue
            path, _, anchor = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            assert linked.exists(), f"{page.relative_to(ROOT)} links to missing {target}"
            if anchor:
                headings = [
                    re.sub(r"[^\w\- ]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
                    for line in linked.read_text(encoding="utf-8").splitlines()
                    if line.startswith("#")
                ]
                assert anchor in headings, f"{page.relative_to(ROOT)}: no section for {target}"


def test_benchmark_table_cells_fit_a_line():
    for page in (README, ROOT / "benchmarks" / "README.md"):
        for line in page.read_text(encoding="utf-8").splitlines():
            if line.startswith("|"):
                cells = [cell.strip() for cell in line.strip("|").split(" | ")]
                assert max(map(len, cells)) <= 120, f"{page.name}: {line[:60]}..."
