"""Fixtures of support modules the integration tests use."""

from tests.notebooks import kernels  # noqa: F401 (the notebooks' kernel specs)
