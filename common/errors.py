"""The project's own exception types. Each message tells the user what to do next."""


class Qwen3BatchError(Exception):
    """Base class for every error this project raises on purpose."""


class ConfigError(Qwen3BatchError):
    """A bad option value (dtype, device, dimension, sequence lengths, ...)."""


class ModelLoadError(Qwen3BatchError):
    """A checkpoint could not be found or loaded."""


class BackendUnavailableError(Qwen3BatchError):
    """An optional backend's runtime (onnxruntime, vaststreamx, vamc) is not installed."""


class NonFiniteOutputError(Qwen3BatchError):
    """A NaN or inf appeared in a model output; the affected rows must not be written."""

    def __init__(self, message: str, rows: list[int] | None = None):
        super().__init__(message)
        self.rows = rows or []


class InputTooLongError(Qwen3BatchError):
    """The parts of an input that must never be truncated do not fit the sequence length."""
