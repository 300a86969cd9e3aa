"""Which errors are the store's state (waited out, never counted towards a quarantine) and which
are the shard's own (noted, retried, quarantined at the cap)."""

import errno

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from common.errors import describe, is_transient


def wrapped(exc: BaseException) -> Exception:
    """What fsspec and pyarrow do: raise their own error from the OS's or the client's."""
    try:
        raise exc
    except BaseException as inner:
        try:
            raise RuntimeError("while writing the shard's data file") from inner
        except RuntimeError as outer:
            return outer


@pytest.mark.parametrize("exc", [
    OSError(errno.ENOSPC, "No space left on device"),
    OSError(errno.EROFS, "Read-only file system"),
    PermissionError(errno.EACCES, "Permission denied"),
    OSError(errno.EDQUOT, "Disk quota exceeded"),
    ConnectionResetError(errno.ECONNRESET, "reset"),
    EndpointConnectionError(endpoint_url="http://127.0.0.1:9"),
    ClientError({"Error": {"Code": "SlowDown", "Message": "reduce your request rate"}}, "PutObject"),
    ClientError({"Error": {"Code": "ServiceUnavailable", "Message": "later"}}, "GetObject"),
    wrapped(OSError(errno.ENOSPC, "No space left on device")),
], ids=lambda e: describe(e)[:40])
def test_a_full_read_only_or_unreachable_store_is_transient(exc):
    assert is_transient(exc)


@pytest.mark.parametrize("exc", [
    ValueError("a row the tokenizer cannot take"),
    FileNotFoundError(errno.ENOENT, "No such file or directory"),
    RuntimeError("CUDA error: an illegal memory access was encountered"),
    ClientError({"Error": {"Code": "NoSuchBucket", "Message": "gone"}}, "PutObject"),
    wrapped(KeyError("text")),
], ids=lambda e: describe(e)[:40])
def test_the_shards_own_errors_are_not_transient(exc):
    assert not is_transient(exc)


def test_an_os_error_is_described_by_its_errno_name():
    assert describe(OSError(errno.ENOSPC, "No space left on device")).startswith("OSError ENOSPC:")
