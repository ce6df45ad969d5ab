"""Where the tests find the repository's files, whichever tier directory a test module sits in."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TEMPLATES = REPO / "tests" / "templates"
# The data files the project's sessions share, beside the repository.
SHARED_DATA = REPO.parent / "shared" / "data"
