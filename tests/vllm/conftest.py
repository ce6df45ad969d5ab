"""Fixtures the vLLM tests share with fast tests that define them in their own module (the vLLM
server itself and its contexts are tests/conftest.py's)."""

from tests.test_notebooks import kernels  # noqa: F401 (the notebooks' kernel specs)
