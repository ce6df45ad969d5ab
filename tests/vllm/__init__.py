"""Tests that need the real vLLM server the test session starts (marker `vllm`, slow; run with
`-m vllm` or `-m "vllm or not vllm"`). The fast tests, without it, are in tests/ above."""
