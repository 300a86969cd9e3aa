"""The project's own exception types. Each message tells the user what to do next."""

import errno


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


class CommitBroken(Qwen3BatchError):
    """A commit record whose data file is gone, or no longer what the record says (deleted by hand,
    lost with a disk, rewritten). The record is withdrawn and the shard computed again."""


# What a full, read-only or unreachable store raises. These say nothing about the shard: the same
# attempt succeeds once the disk has room, the mount is writable or the bucket answers again, so
# they are retried without a bound (and never count towards a quarantine).
TRANSIENT_ERRNOS = frozenset({
    errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO, errno.EAGAIN, errno.EBUSY,
    errno.ETIMEDOUT, errno.ECONNRESET, errno.ECONNREFUSED, errno.ECONNABORTED, errno.EHOSTUNREACH,
    errno.ENETUNREACH, errno.ENETDOWN, errno.ESTALE, errno.ENOLCK, errno.EPIPE})
# botocore / aiobotocore / aiohttp errors of a store that does not answer, by name (no import here)
TRANSIENT_NAMES = frozenset({
    "EndpointConnectionError", "ConnectionClosedError", "ConnectTimeoutError", "ReadTimeoutError",
    "ConnectionError", "HTTPClientError", "ServerDisconnectedError", "ClientConnectionError",
    "ClientConnectorError", "ClientOSError", "NoCredentialsError"})
TRANSIENT_S3_CODES = frozenset({"SlowDown", "RequestTimeout", "InternalError", "ServiceUnavailable", "Throttling",
                                "ThrottlingException", "RequestLimitExceeded", "503", "500", "AccessDenied",
                                "ExpiredToken", "RequestTimeTooSkewed"})


def is_transient(exc: BaseException) -> bool:
    """Whether an error is the store's state rather than the shard's: a full or read-only disk, a
    permission taken away, a bucket that does not answer or throttles. Follows the chain of causes
    (fsspec and pyarrow wrap what the OS or the S3 client said)."""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, OSError) and exc.errno in TRANSIENT_ERRNOS:
            return True
        if isinstance(exc, (ConnectionError, TimeoutError)) or type(exc).__name__ in TRANSIENT_NAMES:
            return True
        code = str((getattr(exc, "response", None) or {}).get("Error", {}).get("Code", "")) \
            if isinstance(getattr(exc, "response", None), dict) else ""
        if code in TRANSIENT_S3_CODES:
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


STORE_BACKOFF_MAX_S = 60  # the longest wait between attempts while the store fails


def store_backoff_s(failures: int, base_s: float) -> float:
    """How long to wait after the store failed `failures` times in a row: base, doubling, at most
    STORE_BACKOFF_MAX_S (a store that is out for an hour is retried every minute)."""
    return min(STORE_BACKOFF_MAX_S, base_s * 2 ** min(failures, 8))


def describe(exc: BaseException) -> str:
    """One line naming the error and, for an OS error, its errno name (ENOSPC reads better than 28)."""
    name = errno.errorcode.get(getattr(exc, "errno", None) or -1, "")
    return f"{type(exc).__name__}{f' {name}' if name else ''}: {exc}"[:2000]
