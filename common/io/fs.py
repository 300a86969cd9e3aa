"""Files by URL: a local path, or an object in a bucket (s3://, gs://), through fsspec (s3fs, gcsfs).

Credentials and endpoints come from the libraries' own provider chains: for S3 the AWS environment
variables, config and profile files and instance roles, with AWS_ENDPOINT_URL (or
AWS_ENDPOINT_URL_S3) for S3-compatible stores such as MinIO, Ceph or R2; for GCS the application
default credentials. Signing, retries and multipart uploads are the libraries' too.
"""

import functools
import os
import posixpath
from pathlib import Path

from common.errors import ConfigError

OBJECT_SCHEMES = ("s3", "gs", "gcs")


def scheme(url: str) -> str:
    return url.split("://", 1)[0].lower() if "://" in url else ""


def is_object_url(url: str) -> bool:
    return scheme(str(url)) in OBJECT_SCHEMES


def normalize(url: str) -> str:
    """A canonical spelling: s3://bucket/a/b without a trailing slash or dot segments; a local
    path made absolute and resolved (symlinks included, as containment checks need)."""
    url = str(url)
    if not is_object_url(url):
        if "://" in url:
            raise ConfigError(f"{url}: unsupported URL scheme {scheme(url)!r}; use a path, s3:// or gs://")
        return os.path.realpath(os.path.expanduser(url))
    kind, rest = url.split("://", 1)
    kind = "gs" if kind.lower() == "gcs" else kind.lower()
    if "\x00" in rest or any(part in ("..", ".") for part in rest.split("/")):
        raise ConfigError(f"{url}: '.' and '..' segments are not allowed in object URLs")
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise ConfigError(f"{url}: no bucket")
    key = posixpath.normpath("/" + key).lstrip("/") if key else ""
    return f"{kind}://{bucket}" + (f"/{key}" if key else "")


def join(url: str, *parts: str) -> str:
    if is_object_url(url):
        return "/".join([url.rstrip("/"), *[p.strip("/") for p in parts if p]])
    return str(Path(url, *parts))


def within(url: str, root: str) -> bool:
    """`url` is `root` or lies below it (local paths: after resolving symlinks)."""
    try:
        u, r = normalize(url), normalize(root)
    except ConfigError:
        return False
    if is_object_url(u) != is_object_url(r):
        return False
    sep = "/" if is_object_url(u) else os.sep
    return u == r or u.startswith(r.rstrip(sep) + sep)


def filesystem(kind: str):
    """One fsspec filesystem per scheme and process (they pool connections).

    Keyed by pid too: s3fs and gcsfs refuse to be used after a fork, and the
    prefork pool forks after the main process has already opened the store."""
    return _filesystem(kind, os.getpid())


@functools.cache
def _filesystem(kind: str, pid: int):
    import fsspec

    if kind == "s3":
        try:
            import s3fs  # noqa: F401  (fsspec finds it; the error says what to install)
        except ImportError as exc:
            raise ConfigError("s3:// needs the s3fs package: pip install 'qwen3-batch[s3]'") from exc
        # AWS_* variables, profiles, roles, AWS_ENDPOINT_URL(_S3); listings read fresh, never cached
        return fsspec.filesystem("s3", use_listings_cache=False)
    if kind == "gs":
        try:
            import gcsfs  # noqa: F401
        except ImportError as exc:
            raise ConfigError("gs:// needs the gcsfs package: pip install 'qwen3-batch[gcs]'") from exc
        return fsspec.filesystem("gcs", cache_timeout=0)  # application default credentials; no listing cache
    return fsspec.filesystem("file")


def fs_and_path(url: str):
    """(fsspec filesystem, the path it expects) for a URL or a local path."""
    url = str(url)
    if is_object_url(url):
        normalized = normalize(url)
        return filesystem(scheme(normalized)), normalized.split("://", 1)[1]
    return filesystem("file"), str(url)


def open_url(url: str, mode: str = "rb", **kwargs):
    """A file object; local files are opened directly (fsspec's options are for buckets). With
    `size` known, a bucket's file is read with ranged GETs alone, no HEAD first."""
    if not is_object_url(str(url)):
        return open(url, mode)
    fs, path = fs_and_path(url)
    return open_object(fs, path, mode, **kwargs)


def open_object(fs, path: str, mode: str = "rb", **kwargs):
    """fs.open, told the size when the caller knows it: its file object would otherwise look up the
    object's details (a HEAD request) before its first read, whatever size it was given."""
    f = fs.open(path, mode, **kwargs)
    if kwargs.get("size") is not None and "r" in mode:
        f.details = {"name": path, "size": kwargs["size"], "type": "file"}
    return f


def size(url: str) -> int:
    fs, path = fs_and_path(url)
    return int(fs.size(path))


def exists(url: str) -> bool:
    fs, path = fs_and_path(url)
    return fs.exists(path)


def mtime_ns(url: str) -> int:
    """The file's modification time, for the record only (a job's identity is its content)."""
    if is_object_url(url):
        return 0
    return os.stat(url).st_mtime_ns


def to_url(fs_path: str, kind: str) -> str:
    return f"{kind}://{fs_path}" if kind in ("s3", "gs") else fs_path


def arrow_dataset(url: str, **kwargs):
    """A pyarrow Dataset of the Parquet files under `url`, on disk or in a bucket."""
    import pyarrow.dataset as pads

    if not is_object_url(url):
        return pads.dataset(url, format="parquet", **kwargs)
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    filesystem, path = fs_and_path(url)
    return pads.dataset(path, format="parquet", filesystem=PyFileSystem(FSSpecHandler(filesystem)), **kwargs)
