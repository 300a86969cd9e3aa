"""Benchmark commands (scripts, never timed tests)."""
