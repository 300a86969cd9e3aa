"""The benchmark's own error type."""

from common.errors import Qwen3BatchError


class BenchError(Qwen3BatchError):
    """A benchmark setting that cannot be run, or an instance process that failed."""
