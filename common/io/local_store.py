"""The output store on a local or shared POSIX filesystem (NFS, CephFS, Lustre): commits are hard
links of fully written files, publishing is a hard link too, and every write first checks that
its folder resolves inside the output, so a symlink planted in it (`data -> /elsewhere`) makes the
write fail instead of landing outside. A filesystem without hard links (most FUSE mounts of object
stores, some SMB shares) is refused up front by `check_commits_supported`, with what to do."""

import errno
import os
import shutil
import uuid
from pathlib import Path

from common.errors import CommitBroken, RefusedMessage, StoreUnsupportedError
from common.io.store import PLAN, TMP, Attempt, OutputStore, OutsideOutputError, new_attempt_id
from common.paths import is_within
from common.schemas import SHARD_ID, CommitRecord

# errnos of a filesystem that has no hard links at all (as opposed to a link that lost a race)
NO_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS, errno.EMLINK, errno.EXDEV, errno.EACCES}


class LocalStore(OutputStore):
    def __init__(self, root: str | os.PathLike):
        self.root = Path(str(root)).expanduser().resolve()
        self.url = str(self.root)

    def path(self, key: str) -> Path:
        return self.root / key

    def writable(self, path: Path) -> Path:
        """`path`, once its folder exists and resolves inside the root (no symlink leads out)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        if not is_within(path.parent, self.root):
            raise OutsideOutputError(f"refusing to write {path}: {path.parent} resolves to "
                                     f"{os.path.realpath(path.parent)}, outside the output {self.root} (a symlink "
                                     "planted inside the output?)")
        return path

    def check_contained(self) -> None:
        if self.path(PLAN).exists() and not is_within(self.path(PLAN), self.root):
            raise RefusedMessage(f"{self.path(PLAN)} is a symlink out of the output {self.root}")

    # --- primitives -------------------------------------------------------------------------------------
    def read_bytes(self, key: str) -> bytes | None:
        try:
            return self.path(key).read_bytes()
        except FileNotFoundError:
            return None

    def exists(self, key: str) -> bool:
        return self.path(key).exists()

    def create_if_absent(self, key: str, body: bytes) -> bool:
        return create_if_absent(self.writable(self.path(key)), body)

    def put(self, key: str, body: bytes) -> None:
        replace_atomically(self.writable(self.path(key)), body)

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    def delete_prefix(self, prefix: str) -> None:
        shutil.rmtree(self.path(prefix), ignore_errors=True)

    def names(self, prefix: str) -> list[str]:
        try:
            return [e.name for e in os.scandir(self.path(prefix))]
        except FileNotFoundError:
            return []

    def open_read(self, key: str, size: int | None = None):
        return open(self.path(key), "rb")

    def read_range(self, key: str, start: int, end: int) -> bytes:
        with open(self.path(key), "rb") as f:
            if start < 0:
                f.seek(max(0, os.fstat(f.fileno()).st_size + start))
                return f.read()
            f.seek(start)
            return f.read(end - start)

    def size(self, key: str) -> int:
        return self.path(key).stat().st_size

    def check_commits_supported(self) -> None:
        """Refuse a store whose filesystem has no hard links, before anything depends on them: a
        commit there would fail on every attempt, and so would the quarantine record."""
        self.root.mkdir(parents=True, exist_ok=True)
        probe_links(self.root)

    def new_attempt(self, shard_id: str) -> Attempt:
        attempt = new_attempt_id()
        folder = self.writable(self.path(f"{TMP}/{self._shard(shard_id)}") / attempt)
        folder.mkdir(exist_ok=False)
        return Attempt(shard_id, attempt, folder)

    def upload_attempt(self, attempt: Attempt, keys: list[str]) -> None:
        for key in keys:  # already in place, inside the output: a folder that leads out is refused here,
            self.writable(self.path(key))  # before the commit, not after it

    def discard_attempt(self, attempt: Attempt) -> None:
        shutil.rmtree(attempt.local_dir, ignore_errors=True)

    def publish_file(self, source_key: str, final_key: str) -> None:
        target = self.path(final_key)
        if target.exists():
            return
        self.writable(target)
        try:
            os.link(self.path(source_key), target)
        except FileExistsError:
            pass
        except FileNotFoundError:
            if not target.exists():
                raise CommitBroken(f"its commit names {self.path(source_key)}, which is gone, and its data file "
                                   "is not there") from None

    def forget_attempt(self, record: CommitRecord) -> None:
        """Every attempt of the shard (a crashed one's too): once it is committed, no other can win."""
        shutil.rmtree(self.path(f"{TMP}/{self._shard(record.shard_id)}"), ignore_errors=True)

    def clean_attempts(self, committed) -> None:
        for name in self.names(TMP):  # left only by attempts that crashed before their shard was committed
            if SHARD_ID.match(name) and committed(name):
                shutil.rmtree(self.path(f"{TMP}/{name}"), ignore_errors=True)

    def put_file(self, key: str, local: Path) -> None:
        target = self.writable(self.path(key))
        shutil.copyfile(local, target.with_name(f".{target.name}.tmp"))
        os.replace(target.with_name(f".{target.name}.tmp"), target)


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
            "CephFS, Lustre), or write it straight to a bucket (s3://, gs://), not to a FUSE mount of one") from exc
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
