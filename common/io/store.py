"""The output store: the durable truth of a job (plan + per-shard commit records).

Layout under the output root (only `data/` and `rejects/` are meant for readers):

    _plan.json                   the plan, written atomically before anything is enqueued
    _plan/duplicate_ids.parquet  rows whose id was seen earlier in the corpus
    _commits/<shard>.json        one per shard; its creation IS the commit (first committer wins)
    _quarantine/<shard>.json     a shard given up after the attempt cap, with its reason
    _tmp/<shard>/<attempt>/      an attempt's files before they are committed
    _CANCELLED, _SUCCESS.json    job state markers
    data/part-<shard>.parquet    results: one Parquet dataset
    rejects/part-<shard>.parquet rejected rows with file, row and reason

Committing uses create-if-absent (a hard link of a fully written file, atomic on POSIX), never
os.replace, which is last-writer-wins: two attempts on an accelerator need not be bit-identical,
and the file a reader saw must never change under it.
"""

import os
import re
import shutil
import uuid
from pathlib import Path

from common.errors import ConfigError, Qwen3BatchError
from common.schemas import CommitRecord, Plan, QuarantineRecord, SuccessMarker

SHARD_ID = re.compile(r"^[0-9]{5}-[0-9]{12}$")


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
        path = self._shard_path("_tmp", shard_id, "") / attempt
        path.mkdir(parents=True, exist_ok=False)
        return attempt, path

    def staged(self, shard_id: str, attempt: str, final: Path) -> Path:
        """Where an attempt writes the file that becomes `final` once committed."""
        path = self._shard_path("_tmp", shard_id, "") / attempt / final.relative_to(self.root)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def relative(self, path: Path) -> str:
        return str(path.relative_to(self.root))

    # --- plan -----------------------------------------------------------------------------------
    def save_plan(self, plan: Plan) -> Plan:
        """Write the plan unless one exists; return the plan that owns this output.

        The same job submitted again gets its existing plan back (a resume); a different job
        is refused, never merged.
        """
        body = plan.model_dump_json(indent=1).encode()
        if create_if_absent(self.plan_path, body):
            return plan
        existing = self.load_plan()
        if existing.fingerprint != plan.fingerprint:
            raise JobConflictError(
                f"{self.root} already holds job {existing.job_id} (fingerprint {existing.fingerprint[:12]}), "
                f"which differs from this one ({plan.fingerprint[:12]}): inputs, model or options changed. "
                "Use another --out, or delete that output to start over")
        return existing

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
        won = create_if_absent(self.commit_path(record.shard_id), record.model_dump_json(indent=1).encode())
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
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(source, target)
            except FileExistsError:
                pass
            except FileNotFoundError:
                if not target.exists():
                    raise Qwen3BatchError(f"commit of shard {record.shard_id} names {source}, which is gone") from None
        shutil.rmtree(self.root / "_tmp" / record.shard_id, ignore_errors=True)

    def list_commits(self) -> dict[str, CommitRecord]:
        """Commit records are immutable, so a watcher parses each one once, however often it polls."""
        cache = self.__dict__.setdefault("_commit_cache", {})
        return _load_all(self.root / "_commits", CommitRecord, cache)

    # --- quarantine, cancel, success ----------------------------------------------------------------
    def quarantine(self, record: QuarantineRecord) -> bool:
        return create_if_absent(self.quarantine_path(record.shard_id), record.model_dump_json(indent=1).encode())

    def list_quarantined(self) -> dict[str, QuarantineRecord]:
        return _load_all(self.root / "_quarantine", QuarantineRecord)

    def clear_quarantine(self) -> int:
        folder = self.root / "_quarantine"
        n = len(list(folder.glob("*.json"))) if folder.is_dir() else 0
        shutil.rmtree(folder, ignore_errors=True)
        return n

    def is_cancelled(self) -> bool:
        return self.cancel_path.exists()

    def set_cancelled(self, cancelled: bool) -> None:
        if cancelled:
            self.cancel_path.touch()
        else:
            self.cancel_path.unlink(missing_ok=True)

    def load_success(self) -> SuccessMarker | None:
        try:
            return SuccessMarker.model_validate_json(self.success_path.read_bytes())
        except FileNotFoundError:
            return None

    def save_success(self, marker: SuccessMarker) -> bool:
        return create_if_absent(self.success_path, marker.model_dump_json(indent=1).encode())


def create_if_absent(path: Path, body: bytes) -> bool:
    """Atomically create `path` with `body` unless it exists. Readers never see a partial file:
    the body is written and fsynced under a unique name, then hard-linked into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    with open(tmp, "wb") as f:
        f.write(body)
        f.flush()
        os.fsync(f.fileno())
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)


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
