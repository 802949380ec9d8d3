"""Benchmark commands (``python -m toolmaster.bench.<name>``): side-by-side timings printed as a ratio."""
