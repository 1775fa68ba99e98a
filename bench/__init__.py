"""Benchmarks and soak scripts (not part of the test suite); see docs/benchmarks.md."""
