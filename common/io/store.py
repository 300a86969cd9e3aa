"""The output store: the durable truth of a job (plan + per-shard commit records), on a local or
shared POSIX filesystem (common/io/local_store.py) or in a bucket (common/io/object_store.py).
`OutputStore(url)` picks the backend from the URL, as pathlib.Path picks PosixPath.

Layout under the output (only `data/` and `rejects/` are meant for readers):

    _plan.json, _plan/<fp>/      the plan: a header, and its shard, input and duplicate-id tables
                                 (common/io/plans.py), written before anything is enqueued
    _commits/<shard>.json        one per shard; its creation IS the commit (first committer wins)
    _quarantine/<shard>.json     a shard given up after the attempt cap, with its reason
    _progress/<version>.json     the commit and quarantine records folded into one manifest
                                 (common/io/manifest.py): what status and the job's end read
    _tmp/<shard>/<attempt>/      an attempt's files before they are committed
    _tmp/<shard>/notes/          what workers saw of deliveries that did not commit (AttemptNote):
                                 the only count a quarantine for lost workers or errors rests on
    _CANCELLED, _SUCCESS.json    job state markers (_SUCCESS.json always describes the folder)
    data/part-<shard>.parquet    results: one Parquet dataset
    rejects/part-<shard>.parquet rejected rows with file, row and reason

The commit protocol, the same on both backends: an attempt writes its files under
`_tmp/<shard>/<attempt>/`; the commit creates `_commits/<shard>.json` only if it does not exist
(a hard link on POSIX; a conditional create on a bucket: S3 If-None-Match, GCS
ifGenerationMatch=0) naming that attempt; the first committer wins and the loser deletes only its
own attempt. The winner's files are then published under `data/` and `rejects/` (a hard link, or a
server-side copy), which anyone who finds a commit whose files are not published yet finishes. So
a reader of `data/` never sees a loser's or a half-written attempt's rows. Never a plain overwrite,
which is last-writer-wins: two attempts on an accelerator need not be bit-identical, and the file a
reader saw must never change under it. A store that cannot create-if-absent is refused up front.
"""

import uuid
from abc import ABC, abstractmethod
from pathlib import Path

from common.errors import ConfigError, PermanentShardError, Qwen3BatchError
from common.schemas import SHARD_ID, AttemptNote, CommitRecord, QuarantineRecord, SuccessMarker

PLAN, SUCCESS, CANCELLED = "_plan.json", "_SUCCESS.json", "_CANCELLED"
COMMITS, QUARANTINE, PROGRESS, TMP, DATA, REJECTS = "_commits", "_quarantine", "_progress", "_tmp", "data", "rejects"
NOTES = "notes"  # _tmp/<shard>/notes/<token>.json: AttemptNote, a delivery that did not commit


class JobConflictError(Qwen3BatchError):
    """A different job already owns this output location."""


class OutsideOutputError(PermanentShardError):
    """A write would land outside the output (through a symlink planted in it): never retried."""


class Attempt:
    """One attempt at a shard: its id, and the local folder its files are written into before the
    commit (inside the output on POSIX; a temporary folder for a bucket, uploaded by the commit)."""

    def __init__(self, shard_id: str, attempt_id: str, local_dir: Path):
        self.shard_id, self.id, self.local_dir = shard_id, attempt_id, local_dir

    def path(self, key: str) -> Path:
        """The local file to write `key` (data/part-....parquet) into."""
        path = self.local_dir / key
        path.parent.mkdir(parents=True, exist_ok=True)
        return path


class OutputStore(ABC):
    url: str  # the output as messages and records name it: an absolute path, or s3://bucket/prefix
    read_concurrency: int = 4  # reads worth running at once (a bucket's are latency, a disk's CPU)

    def __new__(cls, url=None, *args, **kwargs):
        if cls is OutputStore:  # OutputStore(url): the backend for the URL
            from common.io.fs import is_object_url

            if is_object_url(str(url)):
                from common.io.object_store import ObjectStore, S3Store

                backend = S3Store if str(url).lower().startswith("s3://") else ObjectStore
            else:
                from common.io.local_store import LocalStore as backend
            return super().__new__(backend)
        return super().__new__(cls)

    # --- the layout: every name comes from a validated shard id; nothing escapes the output -----
    @staticmethod
    def _shard(shard_id: str) -> str:
        if not SHARD_ID.match(shard_id):
            raise ConfigError(f"invalid shard id {shard_id!r}")
        return shard_id

    def commit_key(self, shard_id: str) -> str:
        return f"{COMMITS}/{self._shard(shard_id)}.json"

    def quarantine_key(self, shard_id: str) -> str:
        return f"{QUARANTINE}/{self._shard(shard_id)}.json"

    def data_key(self, shard_id: str) -> str:
        return f"{DATA}/part-{self._shard(shard_id)}.parquet"

    def reject_key(self, shard_id: str) -> str:
        return f"{REJECTS}/part-{self._shard(shard_id)}.parquet"

    def attempt_key(self, shard_id: str, attempt_id: str, key: str) -> str:
        return f"{TMP}/{self._shard(shard_id)}/{attempt_id}/{key}"

    def location(self, key: str = "") -> str:
        """The URL (or path) of a key, for messages and readers."""
        return self.url.rstrip("/") + ("/" + key if key else "")

    # --- what a backend provides ------------------------------------------------------------------
    @abstractmethod
    def read_bytes(self, key: str) -> bytes | None:
        """The object's bytes, or None when it does not exist."""

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def create_if_absent(self, key: str, body: bytes) -> bool:
        """Create `key` with `body` atomically unless it exists: True when this call created it."""

    @abstractmethod
    def put(self, key: str, body: bytes) -> None:
        """Create or replace atomically (derived records only: the success marker, the cancel mark)."""

    @abstractmethod
    def delete(self, key: str) -> None: ...

    @abstractmethod
    def delete_prefix(self, prefix: str) -> None: ...

    @abstractmethod
    def names(self, prefix: str) -> list[str]:
        """The names of the objects directly under `prefix` (a "folder"), fresh (no listing cache)."""

    @abstractmethod
    def open_read(self, key: str, size: int | None = None):
        """A seekable binary file object (Parquet readers read its footer, then only what they need);
        `size`, when the caller knows it, spares a bucket the request that would look it up."""

    @abstractmethod
    def read_range(self, key: str, start: int, end: int) -> bytes:
        """Bytes [start, end) of `key` (start < 0: the last -start bytes), in one read."""

    @abstractmethod
    def size(self, key: str) -> int: ...

    @abstractmethod
    def check_commits_supported(self) -> None:
        """StoreUnsupportedError, saying what to do, unless this store can create-if-absent."""

    @abstractmethod
    def new_attempt(self, shard_id: str) -> Attempt: ...

    @abstractmethod
    def upload_attempt(self, attempt: Attempt, keys: list[str]) -> None:
        """Make the attempt's files durable under their attempt keys, before its commit."""

    @abstractmethod
    def discard_attempt(self, attempt: Attempt) -> None:
        """Remove this attempt's files (a loser, or a failure): only its own."""

    def release(self, attempt: Attempt) -> None:
        """Free what the attempt holds on this machine once the commit is decided (a bucket's local copies)."""

    @abstractmethod
    def publish_file(self, source_key: str, final_key: str) -> None:
        """Make a committed attempt's file readable under its final name (idempotent: the same bytes)."""

    @abstractmethod
    def forget_attempt(self, record: CommitRecord) -> None:
        """Remove a published attempt's own files (what publishing made redundant)."""

    @abstractmethod
    def clean_attempts(self, committed) -> None:
        """Remove what attempts left under _tmp/ for the shards `committed(shard_id)` says are
        committed (a crashed attempt's files; another attempt's commit made them useless)."""

    @abstractmethod
    def put_file(self, key: str, local: Path) -> None:
        """Store a local file under `key` (the planner's duplicate-id table)."""

    def check_contained(self) -> None:
        """RefusedMessage when the output's own files lead out of it (a planted symlink); buckets have none."""

    # --- plan ------------------------------------------------------------------------------------------
    def has_plan(self) -> bool:
        return self.exists(PLAN)

    # --- commits ----------------------------------------------------------------------------------
    def load_commit(self, shard_id: str) -> CommitRecord | None:
        body = self.read_bytes(self.commit_key(shard_id))
        return None if body is None else CommitRecord.model_validate_json(body)

    def commit(self, record: CommitRecord, attempt: Attempt) -> bool:
        """First committer wins. False (and this attempt's files removed) when another attempt
        committed the shard first; the committed files are then left untouched."""
        finals = [k for k in (record.data_file, record.reject_file) if k]
        try:
            self.upload_attempt(attempt, finals)
            # An error here leaves the attempt's files alone: the create may have succeeded before its
            # reply was lost, and then the record names them (the next visitor publishes them).
            won = self.create_if_absent(self.commit_key(record.shard_id), record.model_dump_json(indent=1).encode())
            if won:
                self.publish(record)
            else:
                self.discard_attempt(attempt)
            return won
        finally:
            self.release(attempt)

    def publish(self, record: CommitRecord) -> None:
        """Make a committed attempt's files readable under data/ and rejects/. Idempotent: whoever
        finds a commit whose files are not published (a crash after the commit) finishes it."""
        for final in filter(None, (record.data_file, record.reject_file)):
            self.publish_file(self.attempt_key(record.shard_id, record.attempt, final), final)
        self.forget_attempt(record)

    def withdraw_commit(self, record: CommitRecord) -> None:
        """Forget a commit whose files are gone or wrong: the shard is computed again, and its new
        commit is the only one (the record goes first, so no reader pairs it with the new files)."""
        self.delete(self.commit_key(record.shard_id))
        for final in filter(None, (record.data_file, record.reject_file)):
            self.delete(final)

    # --- attempts that did not commit (workers/runner.py decides a quarantine on these) ------------
    def note_key(self, shard_id: str, token: str) -> str:
        return f"{TMP}/{self._shard(shard_id)}/{NOTES}/{token}.json"

    def note_attempt(self, token: str, note: AttemptNote) -> None:
        self.put(self.note_key(note.shard_id, token), note.model_dump_json().encode())

    def attempt_notes(self, shard_id: str) -> list[AttemptNote]:
        notes = []
        for name in self.names(f"{TMP}/{self._shard(shard_id)}/{NOTES}"):
            body = self.read_bytes(f"{TMP}/{self._shard(shard_id)}/{NOTES}/{name}")
            try:
                note = AttemptNote.model_validate_json(body or b"")
            except ValueError:
                continue  # not one of ours
            if note.shard_id == shard_id:
                notes.append(note)
        return notes

    # --- quarantine, cancel, success --------------------------------------------------------------
    def quarantine(self, record: QuarantineRecord) -> bool:
        return self.create_if_absent(self.quarantine_key(record.shard_id), record.model_dump_json(indent=1).encode())

    def load_quarantine(self, shard_id: str) -> QuarantineRecord | None:
        body = self.read_bytes(self.quarantine_key(shard_id))
        return None if body is None else QuarantineRecord.model_validate_json(body)

    def clear_quarantine(self, shard_ids: list[str]) -> None:
        """Forget these shards' quarantine records: they get another round."""
        for shard_id in shard_ids:
            self.delete(self.quarantine_key(shard_id))
            self.delete_prefix(f"{TMP}/{self._shard(shard_id)}/{NOTES}")  # a fresh count of attempts

    def is_cancelled(self) -> bool:
        return self.exists(CANCELLED)

    def set_cancelled(self, cancelled: bool) -> None:
        if cancelled:
            self.put(CANCELLED, b"")
        else:
            self.delete(CANCELLED)

    def load_success(self) -> SuccessMarker | None:
        body = self.read_bytes(SUCCESS)
        return None if body is None else SuccessMarker.model_validate_json(body)

    def save_success(self, marker: SuccessMarker) -> None:
        """Write (or rewrite) the marker. It is derived from the commit and quarantine records, so
        unlike a commit it may be replaced: a late commit after a quarantine makes the old one wrong."""
        self.put(SUCCESS, marker.model_dump_json(indent=1).encode())

    def drop_success(self) -> None:
        """The job runs again (quarantined shards retried): no marker until it is whole again."""
        self.delete(SUCCESS)


def new_attempt_id() -> str:
    return uuid.uuid4().hex[:16]

