"""Fixtures of support modules the vLLM tests use (the vLLM server itself and its contexts are
tests/conftest.py's)."""

from tests.notebooks import kernels  # noqa: F401 (the notebooks' kernel specs)
