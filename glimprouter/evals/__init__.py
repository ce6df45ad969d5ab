"""Evaluating GlimpRouter and its baselines: benchmarks, graders, methods, runner, report."""
