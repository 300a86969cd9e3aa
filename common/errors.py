"""The project's own exception types. Each message tells the user what to do next."""


class Qwen3BatchError(Exception):
    """Base class for every error this project raises on purpose."""


class ConfigError(Qwen3BatchError):
    """A bad option value (dtype, device, dimension, sequence lengths, ...)."""


class ModelLoadError(Qwen3BatchError):
    """A checkpoint could not be found or loaded."""


class BackendUnavailableError(Qwen3BatchError):
    """An optional backend's runtime (onnxruntime, vaststreamx, vamc) is not installed."""


class RefusedMessage(Qwen3BatchError):
    """A queue message that is malformed, names paths outside this process's roots, or disagrees
    with the job's plan. Anyone who can write to Redis can publish one: it is dropped, never run."""


class PermanentShardError(Qwen3BatchError):
    """A shard that fails the same way on every attempt (its input changed since planning, say):
    it is quarantined at once instead of being retried."""


class StoreUnsupportedError(Qwen3BatchError):
    """The output store lacks what exactly-once commits need (hard links on a POSIX store)."""
