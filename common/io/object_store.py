"""The output store in a bucket (s3://, gs://), through fsspec (s3fs, gcsfs): no rename, no hard
links, so the commit is a conditional create, `pipe_file(mode="create")`: S3 PutObject with
If-None-Match: * (AWS since 2024, MinIO), GCS ifGenerationMatch=0. The first committer wins.

Why the commit record plus a copy, not a table format: an attempt uploads its files under
`_tmp/<shard>/<attempt>/`, the commit record names that attempt, and the winner's files are then
copied server-side into `data/` and `rejects/` (no bytes leave the store; anyone who finds a commit
whose files are not copied yet finishes it). Readers then see a plain Parquet dataset that pandas,
polars, DuckDB, Spark and pyarrow read as it is, with no table-format library, and never a loser's
or a half-written attempt's rows: an object appears whole or not at all. The price is one
server-side copy per shard file, small next to a shard's compute.

Listings are read fresh (fsspec's listing cache is off): the reconciler and the completion check
must see what other hosts wrote a moment ago. S3 and GCS are strongly consistent for that.

On S3 (`S3Store`) every primitive is one plain key request: a GET, a HEAD, a conditional PUT, a
server-side COPY, a DELETE. The filesystem layer's conveniences cost more: its `exists` of a
missing key adds a LIST (is it a "directory"?), its `cat_file` a HEAD (for the size), its `copy` a
HEAD and its recursive delete a LIST. At 5e5 shards such probes were most of a job's requests.
"""

import shutil
import tempfile
import uuid
from pathlib import Path

from common.errors import CommitBroken, StoreUnsupportedError
from common.io.fs import fs_and_path, normalize, open_object
from common.io.store import TMP, Attempt, OutputStore, new_attempt_id
from common.schemas import CommitRecord

READ_BLOCK_BYTES = 8 << 20  # read-ahead of a file opened for reading: one ranged GET per 8 MiB


class ObjectStore(OutputStore):
    read_concurrency = 16  # each read waits tens of milliseconds on the network
    def __init__(self, url: str):
        self.url = normalize(str(url))
        _, self.base = fs_and_path(self.url)

    @property
    def fs(self):
        """Looked up per call: the filesystem of this process (a forked child gets its own)."""
        return fs_and_path(self.url)[0]

    def key_path(self, key: str) -> str:
        return f"{self.base}/{key}" if key else self.base

    # --- primitives -------------------------------------------------------------------------------------
    def read_bytes(self, key: str) -> bytes | None:
        try:
            return self.fs.cat_file(self.key_path(key))
        except FileNotFoundError:
            return None

    def exists(self, key: str) -> bool:
        return self.fs.exists(self.key_path(key))

    def create_if_absent(self, key: str, body: bytes) -> bool:
        try:
            self.fs.pipe_file(self.key_path(key), body, mode="create")
            return True
        except FileExistsError:
            return False

    def put(self, key: str, body: bytes) -> None:
        self.fs.pipe_file(self.key_path(key), body)

    def delete(self, key: str) -> None:
        try:
            self.fs.rm_file(self.key_path(key))
        except FileNotFoundError:
            pass

    def delete_prefix(self, prefix: str) -> None:
        try:
            self.fs.rm(self.key_path(prefix), recursive=True)
        except FileNotFoundError:
            pass

    def names(self, prefix: str) -> list[str]:
        try:
            listed = self.fs.ls(self.key_path(prefix), detail=False, refresh=True)
        except FileNotFoundError:
            return []
        return [p.rstrip("/").rsplit("/", 1)[-1] for p in listed]

    def open_read(self, key: str, size: int | None = None):
        return open_object(self.fs, self.key_path(key), "rb", size=size, block_size=READ_BLOCK_BYTES)

    def read_range(self, key: str, start: int, end: int) -> bytes:
        return self.fs.cat_file(self.key_path(key), start=start, end=None if start < 0 else end)

    def size(self, key: str) -> int:
        return int(self.fs.size(self.key_path(key)))

    def check_commits_supported(self) -> None:
        """A store that ignores the condition would make every commit last-writer-wins: refused,
        never a silent fallback. The probe creates one object twice; the second must be refused."""
        probe = f"{TMP}/.q3b-create-probe-{uuid.uuid4().hex}"
        try:
            first = self.create_if_absent(probe, b"1")
            second = self.create_if_absent(probe, b"2")
        except (NotImplementedError, ValueError, TypeError) as exc:
            raise StoreUnsupportedError(self._unsupported(f"its client cannot ask for one ({exc})")) from exc
        finally:
            self.delete(probe)
        if not (first and not second):
            raise StoreUnsupportedError(self._unsupported("it accepted a second create of the same object"))

    def _unsupported(self, why: str) -> str:
        return (f"output {self.url}: the store does not honour conditional creates (S3 If-None-Match: *, GCS "
                f"ifGenerationMatch=0): {why}. Exactly-once commits need them, and there is no safe fallback. Use "
                "AWS S3, GCS or a MinIO/Ceph release that supports them, or a POSIX output")

    def new_attempt(self, shard_id: str) -> Attempt:
        return Attempt(self._shard(shard_id), new_attempt_id(), Path(tempfile.mkdtemp(prefix="q3b-attempt-")))

    def upload_attempt(self, attempt: Attempt, keys: list[str]) -> None:
        for key in keys:  # multipart for large files: the library's
            self.fs.put_file(str(attempt.local_dir / key), self.key_path(self.attempt_key(attempt.shard_id, attempt.id, key)))

    def discard_attempt(self, attempt: Attempt) -> None:
        self.delete_prefix(f"{TMP}/{attempt.shard_id}/{attempt.id}")
        self.release(attempt)

    def release(self, attempt: Attempt) -> None:
        shutil.rmtree(attempt.local_dir, ignore_errors=True)

    def publish_file(self, source_key: str, final_key: str) -> None:
        """A server-side copy, made whether or not the final object exists: the committed attempt's
        bytes are the only ones ever copied there, so a second copy changes nothing a reader sees,
        and it saves asking first."""
        try:
            self.copy(source_key, final_key)
        except FileNotFoundError:
            if not self.exists(final_key):
                raise CommitBroken(f"its commit names {self.location(source_key)}, which is gone, and its data "
                                   "file is not there") from None

    def copy(self, source_key: str, final_key: str) -> None:
        self.fs.copy(self.key_path(source_key), self.key_path(final_key))

    def forget_attempt(self, record: CommitRecord) -> None:
        keys = [self.attempt_key(record.shard_id, record.attempt, final)
                for final in (record.data_file, record.reject_file) if final]
        self.delete_keys(keys)

    def delete_keys(self, keys: list[str]) -> None:
        for key in keys:
            self.delete(key)

    def clean_attempts(self, committed) -> None:
        """One listing of _tmp/ (it holds only what crashed attempts left: a committed attempt removes
        its own files), then the keys of committed shards, deleted a thousand per request."""
        prefix = self.key_path(TMP) + "/"
        try:
            found = self.fs.find(prefix)
        except FileNotFoundError:
            return
        keys = [p[len(self.base) + 1:] for p in found]
        self.delete_keys([k for k in keys if len(k.split("/")) > 2 and committed(k.split("/")[1])])

    def put_file(self, key: str, local: Path) -> None:
        self.fs.put_file(str(local), self.key_path(key))


class S3Store(ObjectStore):
    """S3 and S3-compatible stores, each primitive one plain request (see the module's docstring)."""

    def _bucket_key(self, key: str) -> tuple[str, str]:
        bucket, _, path = self.key_path(key).partition("/")
        return bucket, path

    def read_bytes(self, key: str) -> bytes | None:
        bucket, path = self._bucket_key(key)
        try:
            response = self.fs.call_s3("get_object", Bucket=bucket, Key=path)
        except FileNotFoundError:
            return None
        return _read_body(self.fs, response)

    def read_range(self, key: str, start: int, end: int) -> bytes:
        bucket, path = self._bucket_key(key)
        span = f"bytes={start}" if start < 0 else f"bytes={start}-{end - 1}"
        return _read_body(self.fs, self.fs.call_s3("get_object", Bucket=bucket, Key=path, Range=span))

    def exists(self, key: str) -> bool:
        bucket, path = self._bucket_key(key)
        try:
            self.fs.call_s3("head_object", Bucket=bucket, Key=path)
            return True
        except FileNotFoundError:
            return False

    def size(self, key: str) -> int:
        bucket, path = self._bucket_key(key)
        return int(self.fs.call_s3("head_object", Bucket=bucket, Key=path)["ContentLength"])

    def delete(self, key: str) -> None:
        bucket, path = self._bucket_key(key)
        self.fs.call_s3("delete_object", Bucket=bucket, Key=path)  # S3 answers 204 for a missing key too

    def delete_keys(self, keys: list[str]) -> None:
        if not keys:
            return
        bucket, _ = self._bucket_key(keys[0])
        for start in range(0, len(keys), 1000):
            objects = [{"Key": self._bucket_key(k)[1]} for k in keys[start:start + 1000]]
            self.fs.call_s3("delete_objects", Bucket=bucket, Delete={"Objects": objects, "Quiet": True})

    def names(self, prefix: str) -> list[str]:
        bucket, path = self._bucket_key(prefix)
        path = path.rstrip("/") + "/"
        found, token = [], {}
        while True:
            page = self.fs.call_s3("list_objects_v2", Bucket=bucket, Prefix=path, Delimiter="/", **token)
            found += [o["Key"][len(path):] for o in page.get("Contents", [])]
            found += [p["Prefix"][len(path):].rstrip("/") for p in page.get("CommonPrefixes", [])]
            if not page.get("IsTruncated"):
                return found
            token = {"ContinuationToken": page["NextContinuationToken"]}

    def copy(self, source_key: str, final_key: str) -> None:
        bucket, source = self._bucket_key(source_key)
        _, target = self._bucket_key(final_key)
        self.fs.call_s3("copy_object", Bucket=bucket, Key=target, CopySource={"Bucket": bucket, "Key": source})


def _read_body(fs, response) -> bytes:
    """The body of a get_object response (aiobotocore streams it: read it on fsspec's loop)."""
    from fsspec.asyn import sync

    async def read():
        try:
            return await response["Body"].read()
        finally:
            response["Body"].close()

    return sync(fs.loop, read)
