"""The output store: the durable truth of a job (plan + per-shard commit records).

Layout under the output root (only `data/` and `rejects/` are meant for readers):

    _plan.json                   the plan, written atomically before anything is enqueued
    _plan/duplicate_ids.parquet  rows whose id was seen earlier in the corpus
    _commits/<shard>.json        one per shard; its creation IS the commit (first committer wins)
    _quarantine/<shard>.json     a shard given up after the attempt cap, with its reason
    _tmp/<shard>/<attempt>/      an attempt's files before they are committed
    _CANCELLED, _SUCCESS.json    job state markers (_SUCCESS.json always describes the folder)
    data/part-<shard>.parquet    results: one Parquet dataset
    rejects/part-<shard>.parquet rejected rows with file, row and reason

Committing uses create-if-absent (a hard link of a fully written file, atomic on POSIX), never
os.replace, which is last-writer-wins: two attempts on an accelerator need not be bit-identical,
and the file a reader saw must never change under it. A store without hard links (most FUSE
mounts of object stores, some SMB shares) is refused up front by `check_links`, with what to do.

Every write first checks that its folder resolves inside the root: a symlink planted inside the
output (`data -> /elsewhere`) makes the write fail instead of landing outside it.
"""

import errno
import os
import shutil
import uuid
from pathlib import Path

from common.errors import ConfigError, PermanentShardError, Qwen3BatchError, StoreUnsupportedError
from common.paths import is_within
from common.schemas import SHARD_ID, CommitRecord, Plan, QuarantineRecord, SuccessMarker

COMMITS, QUARANTINE, TMP, DATA, REJECTS = "_commits", "_quarantine", "_tmp", "data", "rejects"
# errnos of a filesystem that has no hard links at all (as opposed to a link that lost a race)
NO_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS, errno.EMLINK, errno.EXDEV, errno.EACCES}


class OutsideOutputError(PermanentShardError):
    """A write would land outside the output (through a symlink planted in it): never retried."""


class JobConflictError(Qwen3BatchError):
    """A different job already owns this output location."""


class OutputStore:
    def __init__(self, root: str | os.PathLike):
        text = str(root)
        if "://" in text:
            raise ConfigError(
                f"output {text}: only local or shared-filesystem paths are supported so far "
                "(mount the bucket, e.g. with s3fs/gcsfuse, and pass the mount path)")
        self.root = Path(text).expanduser().resolve()

    # --- paths (every name comes from a validated shard id; nothing escapes the root) ---------
    def _shard_path(self, folder: str, shard_id: str, suffix: str) -> Path:
        if not SHARD_ID.match(shard_id):
            raise ConfigError(f"invalid shard id {shard_id!r}")
        return self.root / folder / f"{shard_id}{suffix}"

    def writable(self, path: Path) -> Path:
        """`path`, once its folder exists and resolves inside the root (no symlink leads out)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        if not is_within(path.parent, self.root):
            raise OutsideOutputError(f"refusing to write {path}: {path.parent} resolves to "
                                     f"{os.path.realpath(path.parent)}, outside the output {self.root} (a symlink "
                                     "planted inside the output?)")
        return path

    @property
    def plan_path(self) -> Path:
        return self.root / "_plan.json"

    @property
    def duplicates_path(self) -> Path:
        return self.root / "_plan" / "duplicate_ids.parquet"

    @property
    def success_path(self) -> Path:
        return self.root / "_SUCCESS.json"

    @property
    def cancel_path(self) -> Path:
        return self.root / "_CANCELLED"

    def commit_path(self, shard_id: str) -> Path:
        return self._shard_path("_commits", shard_id, ".json")

    def quarantine_path(self, shard_id: str) -> Path:
        return self._shard_path("_quarantine", shard_id, ".json")

    def data_path(self, shard_id: str) -> Path:
        return self.root / "data" / f"part-{self._shard_path('data', shard_id, '').name}.parquet"

    def reject_path(self, shard_id: str) -> Path:
        return self.root / "rejects" / f"part-{self._shard_path('rejects', shard_id, '').name}.parquet"

    def new_attempt_dir(self, shard_id: str) -> tuple[str, Path]:
        attempt = uuid.uuid4().hex[:16]
        path = self.writable(self._shard_path(TMP, shard_id, "") / attempt)
        path.mkdir(exist_ok=False)
        return attempt, path

    def staged(self, shard_id: str, attempt: str, final: Path) -> Path:
        """Where an attempt writes the file that becomes `final` once committed."""
        return self.writable(self._shard_path(TMP, shard_id, "") / attempt / final.relative_to(self.root))

    def relative(self, path: Path) -> str:
        return str(path.relative_to(self.root))

    # --- plan -----------------------------------------------------------------------------------
    def save_plan(self, plan: Plan) -> Plan:
        """Write the plan unless one exists; return the plan that owns this output.

        The same job submitted again gets its existing plan back (a resume); a different job
        is refused, never merged.
        """
        body = plan.model_dump_json(indent=1).encode()
        if create_if_absent(self.writable(self.plan_path), body):
            return plan
        return self.plan_owning(plan.fingerprint)

    def plan_owning(self, fingerprint: str) -> Plan:
        """The stored plan, if it is the job with this fingerprint; JobConflictError otherwise."""
        existing = self.load_plan()
        if existing.fingerprint != fingerprint:
            raise JobConflictError(
                f"{self.root} already holds job {existing.job_id} (fingerprint {existing.fingerprint[:12]}), "
                f"which differs from this one ({fingerprint[:12]}): inputs, model or options changed. "
                "Use another --out, or delete that output to start over")
        return existing

    def check_links(self) -> None:
        """Refuse a store whose filesystem has no hard links, before anything depends on them: a
        commit there would fail on every attempt, and so would the quarantine record."""
        self.root.mkdir(parents=True, exist_ok=True)
        probe_links(self.root)

    def load_plan(self) -> Plan:
        try:
            return Plan.model_validate_json(self.plan_path.read_bytes())
        except FileNotFoundError:
            raise ConfigError(f"{self.root} holds no job (no _plan.json)") from None

    # --- commits ----------------------------------------------------------------------------------
    def load_commit(self, shard_id: str) -> CommitRecord | None:
        try:
            return CommitRecord.model_validate_json(self.commit_path(shard_id).read_bytes())
        except FileNotFoundError:
            return None

    def commit(self, record: CommitRecord, attempt_dir: Path) -> bool:
        """First committer wins. Returns False (and removes this attempt's files) if another
        attempt committed the shard first; the committed files are then left untouched."""
        for final in filter(None, (record.data_file, record.reject_file)):
            self.writable(self.root / final)  # a folder that leads out is refused before the commit, not after
        won = create_if_absent(self.writable(self.commit_path(record.shard_id)),
                               record.model_dump_json(indent=1).encode())
        if won:
            self.publish(record)
        else:
            shutil.rmtree(attempt_dir, ignore_errors=True)
        return won

    def publish(self, record: CommitRecord) -> None:
        """Move a committed attempt's files to their reader-visible names. Idempotent: whoever
        finds a commit whose files are still under _tmp (a crash after the commit) finishes it."""
        for final in filter(None, (record.data_file, record.reject_file)):
            target = self.root / final
            if target.exists():
                continue
            source = self.staged(record.shard_id, record.attempt, target)
            self.writable(target)
            try:
                os.link(source, target)
            except FileExistsError:
                pass
            except FileNotFoundError:
                if not target.exists():
                    raise Qwen3BatchError(f"commit of shard {record.shard_id} names {source}, which is gone") from None
        shutil.rmtree(self.root / TMP / record.shard_id, ignore_errors=True)

    def list_commits(self) -> dict[str, CommitRecord]:
        """Commit records are immutable, so a watcher parses each one once, however often it polls."""
        cache = self.__dict__.setdefault("_commit_cache", {})
        return _load_all(self.root / COMMITS, CommitRecord, cache)

    def count_done(self) -> int:
        """Commit plus quarantine records, without parsing them: a cheap "might the job be done?"."""
        return _count_records(self.root / COMMITS) + _count_records(self.root / QUARANTINE)

    # --- quarantine, cancel, success ----------------------------------------------------------------
    def quarantine(self, record: QuarantineRecord) -> bool:
        return create_if_absent(self.writable(self.quarantine_path(record.shard_id)),
                                record.model_dump_json(indent=1).encode())

    def load_quarantine(self, shard_id: str) -> QuarantineRecord | None:
        try:
            return QuarantineRecord.model_validate_json(self.quarantine_path(shard_id).read_bytes())
        except FileNotFoundError:
            return None

    def list_quarantined(self) -> dict[str, QuarantineRecord]:
        return _load_all(self.root / QUARANTINE, QuarantineRecord)

    def clear_quarantine(self) -> list[str]:
        """Forget every quarantine record (the shards get another round); returns their ids."""
        cleared = sorted(self.list_quarantined())
        shutil.rmtree(self.root / QUARANTINE, ignore_errors=True)
        return cleared

    def is_cancelled(self) -> bool:
        return self.cancel_path.exists()

    def set_cancelled(self, cancelled: bool) -> None:
        if cancelled:
            self.writable(self.cancel_path).touch()
        else:
            self.cancel_path.unlink(missing_ok=True)

    def load_success(self) -> SuccessMarker | None:
        try:
            return SuccessMarker.model_validate_json(self.success_path.read_bytes())
        except FileNotFoundError:
            return None

    def save_success(self, marker: SuccessMarker) -> None:
        """Write (or rewrite) the marker. It is derived from the commit and quarantine records, so
        unlike a commit it may be replaced: a late commit after a quarantine makes the old one wrong."""
        replace_atomically(self.writable(self.success_path), marker.model_dump_json(indent=1).encode())

    def drop_success(self) -> None:
        """The job runs again (quarantined shards retried): no marker until it is whole again."""
        self.success_path.unlink(missing_ok=True)


def probe_links(folder: Path) -> None:
    """StoreUnsupportedError, saying what to do, unless hard links work in `folder` (the probe
    files are dot files, removed at once)."""
    probe = folder / f".q3b-link-probe-{uuid.uuid4().hex}"
    linked = probe.with_name(probe.name + ".2")
    try:
        probe.write_bytes(b"")
        os.link(probe, linked)
    except OSError as exc:
        if exc.errno not in NO_LINKS:
            raise
        raise StoreUnsupportedError(
            f"output {folder}: its filesystem does not support hard links ({exc.strerror}), which "
            "first-committer-wins commits need. Put the output on a filesystem that has them (a local disk, NFS, "
            "CephFS, Lustre), not on a FUSE mount of an object store") from exc
    finally:
        for leftover in (probe, linked):
            leftover.unlink(missing_ok=True)


def create_if_absent(path: Path, body: bytes) -> bool:
    """Atomically create `path` with `body` unless it exists. Readers never see a partial file:
    the body is written and fsynced under a unique name, then hard-linked into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = write_temporary(path, body)
    try:
        return link_exclusive(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def link_exclusive(source: Path, target: Path) -> bool:
    """Hard-link `source` to `target` unless `target` exists: True when this call made it. On NFS a
    LINK whose reply was lost is retransmitted and then reports EEXIST although it succeeded; the
    target is then our own file (the same inode), which is a win, not a lost race."""
    try:
        os.link(source, target)
        return True
    except FileExistsError:
        try:
            return os.path.samestat(os.stat(source), os.lstat(target))
        except FileNotFoundError:
            return False


def replace_atomically(path: Path, body: bytes) -> None:
    tmp = write_temporary(path, body)
    os.replace(tmp, path)


def write_temporary(path: Path, body: bytes) -> Path:
    """`body`, written and fsynced under a unique hidden name beside `path` (readers skip dot files)."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(body)
        f.flush()
        os.fsync(f.fileno())
    return tmp


def _count_records(folder: Path) -> int:
    try:
        return sum(1 for e in os.scandir(folder) if e.name.endswith(".json") and not e.name.startswith("."))
    except FileNotFoundError:
        return 0


def _load_all(folder: Path, model, cache: dict | None = None):
    out = {}
    if not folder.is_dir():
        return out
    cache = {} if cache is None else cache
    for entry in os.scandir(folder):
        if entry.name.endswith(".json") and not entry.name.startswith("."):
            key = entry.name[:-5]
            if key not in cache:
                cache[key] = model.model_validate_json(Path(entry.path).read_bytes())
            out[key] = cache[key]
    return out
