"""The test suite. Its helpers (fakes, proxy, processes) are imported as tests.<module>."""
