"""A job's state, from its output store (the truth) and, where Redis still has them, the commits
not yet folded; folding records into the manifest; the end-of-job check.

Reading a job's state costs the same whatever its size: the plan's header, the newest manifest
(common/io/manifest.py), the success marker, and the short list of recent commits in Redis. Redis
may have lost everything (a restart without persistence): the state is then the manifest's, and
the commits it had not folded yet are found again as their shards are delivered again.
"""

import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from common.io.duplicates import DuplicateFinder
from common.io.manifest import Manifest, load_manifest, save_manifest
from common.io.plans import Plan
from common.io.store import OutputStore
from common.schemas import SuccessMarker

log = logging.getLogger(__name__)

ID_BATCH = 65_536  # ids gathered from the data files before they go to the duplicate finder
SMALL_FILE_BYTES = 256 << 10  # the end-of-job check reads a data file's tail this long: a small file whole


class JobCheckError(Exception):
    """The committed output contradicts the plan: a bug, never expected. Nothing is marked done."""


class CommitsWithdrawn(Exception):
    """The end-of-job check found committed data files gone, or holding other rows than their
    records say (deleted or rewritten by hand, lost with a disk). Their commits are withdrawn (the
    store and the manifest no longer count them) and the shards are pending again: the caller has
    them computed again, once each, and the job then finishes by itself."""

    def __init__(self, ordinals: list[int], reasons: list[str]):
        super().__init__(f"{len(ordinals)} committed shards withdrawn to be computed again: {'; '.join(reasons[:5])}")
        self.ordinals = ordinals


@dataclass(frozen=True)
class Event:
    """A commit ("c") or quarantine ("q") of a shard, as a worker announced it in Redis: what live
    progress adds to the manifest until the next fold. Its figures are never trusted further: the
    fold reads the record itself."""

    kind: str
    ordinal: int
    rows_in: int = 0
    rows_out: int = 0
    rows_rejected: int = 0
    tokens: int = 0
    rows_deduplicated: int = 0
    rows_reused: int = 0

    def encode(self) -> str:
        return (f"{self.kind} {self.ordinal} {self.rows_in} {self.rows_out} {self.rows_rejected} {self.tokens} "
                f"{self.rows_deduplicated} {self.rows_reused}")

    @classmethod
    def decode(cls, raw: bytes | str) -> "Event | None":
        """None for anything malformed: anyone who can write to Redis can push an entry."""
        try:
            kind, *numbers = (raw.decode() if isinstance(raw, bytes) else raw).split()
            values = [int(n) for n in numbers]
        except (ValueError, UnicodeDecodeError):
            return None
        if kind not in ("c", "q") or len(values) not in (5, 7) or min(values) < 0:
            return None
        return cls(kind, *values)


@dataclass
class JobState:
    plan: Plan
    manifest: Manifest
    cancelled: bool
    success: SuccessMarker | None = None
    recent: list[Event] = field(default_factory=list)  # announced in Redis, not folded yet

    def __post_init__(self):
        fresh, seen = [], set()
        for e in self.recent:  # the ones the manifest has not got, each shard once, commits first
            if e.ordinal < self.plan.shards_total and not self.manifest.committed[e.ordinal] and e.ordinal not in seen:
                if e.kind == "c" or not self.manifest.quarantined[e.ordinal]:
                    fresh.append(e)
                    seen.add(e.ordinal)
        commits = {e.ordinal: e for e in fresh if e.kind == "c"}
        self.fresh_commits = list(commits.values())
        self.fresh_quarantines = [e for e in fresh if e.kind == "q" and e.ordinal not in commits]

    @property
    def rows_done(self) -> int:
        return self.manifest.rows_done + sum(e.rows_in for e in self.fresh_commits)

    @property
    def rows_out(self) -> int:
        return self.manifest.rows_out + sum(e.rows_out for e in self.fresh_commits)

    @property
    def rows_rejected(self) -> int:
        return self.manifest.rows_rejected + sum(e.rows_rejected for e in self.fresh_commits)

    @property
    def tokens(self) -> int:
        return self.manifest.tokens + sum(e.tokens for e in self.fresh_commits)

    @property
    def rows_deduplicated(self) -> int:
        return self.manifest.rows_deduplicated + sum(e.rows_deduplicated for e in self.fresh_commits)

    @property
    def rows_reused(self) -> int:
        return self.manifest.rows_reused + sum(e.rows_reused for e in self.fresh_commits)

    @property
    def rows_computed(self) -> int:
        return self.rows_out - self.rows_deduplicated - self.rows_reused

    @property
    def shards_committed(self) -> int:
        return self.manifest.shards_committed + len(self.fresh_commits)

    @property
    def shards_quarantined(self) -> int:
        late = sum(1 for e in self.fresh_commits if self.manifest.quarantined[e.ordinal])  # committed after all
        return self.manifest.shards_quarantined + len(self.fresh_quarantines) - late

    @property
    def shards_done(self) -> int:
        return self.shards_committed + self.shards_quarantined

    @property
    def finished(self) -> bool:
        """Every shard is committed or quarantined, and the end-of-job check has written its marker."""
        return self.success is not None and self.manifest.finished and describes(self.success, self.manifest)

    @property
    def status(self) -> str:
        if self.finished:
            return self.success.status
        if self.cancelled:
            return "cancelled"
        return "running" if self.shards_done else "queued"

    def done(self, ordinal: int) -> bool:
        """Whether the shard at `ordinal` is done; False for an ordinal the plan has not got (a
        heartbeat's, which anyone who can write to Redis can write)."""
        if not 0 <= ordinal < self.plan.shards_total:
            return False
        return self.manifest.done(ordinal) or any(e.ordinal == ordinal for e in self.fresh_commits)


def read_state(store: OutputStore, plan: Plan, recent: Iterable[Event] = (), known: Manifest | None = None) -> JobState:
    manifest = load_manifest(store, plan.shards_total, known)
    success = store.load_success() if manifest.finished else None  # it describes a finished manifest only
    return JobState(plan, manifest, store.is_cancelled(), success, list(recent))


# --- folding ---------------------------------------------------------------------------------------------
def fold(store: OutputStore, plan: Plan, manifest: Manifest, events: Iterable[Event]) -> bool:
    """Fold the records these events announce into `manifest`, reading each record from the store
    (never the event's own figures). Returns whether the manifest changed."""
    wanted: dict[int, str] = {}
    for e in events:
        if not 0 <= e.ordinal < plan.shards_total or manifest.committed[e.ordinal]:
            continue
        if e.kind == "c":
            wanted[e.ordinal] = "c"
        elif not manifest.quarantined[e.ordinal]:
            wanted.setdefault(e.ordinal, "q")
    if not wanted:
        return False
    ordinals = sorted(wanted)
    shards = [plan.shard_at(o) for o in ordinals]

    def read(shard):
        if wanted[shard.ordinal] == "c":
            record = store.load_commit(shard.shard_id)
            if record is not None:
                return record
        return store.load_quarantine(shard.shard_id)  # a commit announced but not there: lost, or not ours

    with ThreadPoolExecutor(min(store.read_concurrency, len(shards))) as pool:
        records = list(pool.map(read, shards))
    before = (manifest.shards_committed, manifest.shards_quarantined, len(manifest.problems))
    for shard, record in zip(shards, records):
        if record is None:
            continue
        if hasattr(record, "attempt"):
            manifest.add_commit(shard.ordinal, record, shard.rows)
        else:
            manifest.add_quarantine(shard.ordinal, record, shard.rows)
    return (manifest.shards_committed, manifest.shards_quarantined, len(manifest.problems)) != before


def fold_and_save(store: OutputStore, plan: Plan, events: list[Event], known: Manifest | None = None) -> Manifest:
    """The newest manifest with `events` folded in, stored as a new version when they changed it."""
    manifest = load_manifest(store, plan.shards_total, known)
    for _ in range(5):
        if not fold(store, plan, manifest, events) or save_manifest(store, manifest):
            return manifest
        manifest = load_manifest(store, plan.shards_total)  # another process stored this version first
    raise RuntimeError(f"{store.url}: five other processes stored a manifest while this one folded")


# --- the end of a job ------------------------------------------------------------------------------------
def describes(marker: SuccessMarker, manifest: Manifest) -> bool:
    """Whether a success marker still matches the folded records (a late commit makes it wrong)."""
    return (marker.shards_committed == manifest.shards_committed
            and len(marker.shards_quarantined) == manifest.shards_quarantined
            and marker.rows_out == manifest.rows_out and marker.rows_rejected == manifest.rows_rejected)


def finalize(store: OutputStore, plan: Plan, manifest: Manifest,
             keep_alive: Callable[[], None] = lambda: None) -> SuccessMarker | None:
    """Once every shard is committed or quarantined: check the output, then write the success
    marker (None while shards are pending). Raises JobCheckError, and marks nothing done, when the
    output contradicts the plan.

    The checks: every folded record agreed with its planned shard (the fold checked rows in and
    out); rows committed plus rows in quarantined shards are the rows planned; every committed
    data file is there, holds as many rows in all as the records say, and no id occurs twice
    across the files. That last check reads each file's id column once, a tail read per file (the
    whole file when it is small); it is the one cost that grows with the job, and it runs once, in
    the reconciler (keep_alive renews its lock as it goes), never inside a shard's time limit."""
    if not manifest.finished:
        return None
    started = time.perf_counter()
    success = store.load_success()
    if success is not None and describes(success, manifest):
        return success
    if manifest.problems:
        raise JobCheckError("; ".join(manifest.problems[:5]))
    if manifest.rows_done + manifest.rows_in_quarantined != plan.rows_total:
        raise JobCheckError(f"{manifest.rows_done} rows committed + {manifest.rows_in_quarantined} in quarantined "
                            f"shards != {plan.rows_total} planned")
    rows_read, duplicates, counts, missing = check_output_ids(store, plan, manifest, keep_alive)
    broken = {o: f"{store.location(store.data_key(plan.shard_at(o).shard_id))} is gone" for o in missing}
    if not broken and rows_read != manifest.rows_out:
        broken = mismatched_files(store, plan, manifest, counts)
    if broken:
        withdraw_commits(store, plan, broken)
    if rows_read != manifest.rows_out:
        raise JobCheckError(f"the data files hold {rows_read:,} rows, the commit records {manifest.rows_out:,}")
    if duplicates:
        raise JobCheckError(f"{duplicates} ids occur more than once in {store.location('data')}")
    quarantined = [plan.shard_at(o).shard_id for o in manifest.quarantined_ordinals()]
    marker = SuccessMarker(
        job_id=plan.job_id, status="completed_with_failures" if quarantined else "completed",
        rows_in=plan.rows_total, rows_out=manifest.rows_out, rows_rejected=manifest.rows_rejected,
        rows_in_quarantined_shards=manifest.rows_in_quarantined,
        rows_computed=manifest.rows_out - manifest.rows_deduplicated - manifest.rows_reused,
        rows_deduplicated=manifest.rows_deduplicated, rows_reused=manifest.rows_reused,
        shards_committed=manifest.shards_committed,
        shards_quarantined=tuple(quarantined), finished_at=time.time(),
        check_seconds=round(time.perf_counter() - started, 3), simulated=manifest.simulated,
        random_weights=manifest.random_weights)
    store.save_success(marker)
    # What crashed attempts left of shards committed since (not of quarantined ones: a worker may
    # still be in the middle of one, and commit it late)
    store.clean_attempts(lambda shard_id: _committed(plan, manifest, shard_id))
    return marker


def _committed(plan: Plan, manifest: Manifest, shard_id: str) -> bool:
    try:
        return bool(manifest.committed[plan.shard(shard_id).ordinal])
    except (KeyError, ValueError):
        return False


def mismatched_files(store: OutputStore, plan: Plan, manifest: Manifest, counts: np.ndarray) -> dict[int, str]:
    """The committed shards whose data file holds other than the rows their record says: every
    record is read, which happens only once the totals disagree."""
    def compare(shard):
        record = store.load_commit(shard.shard_id)
        if record is not None and record.rows_out != counts[shard.ordinal]:
            return shard.ordinal, (f"{store.location(record.data_file)} holds {counts[shard.ordinal]:,} rows, its "
                                   f"commit record {record.rows_out:,}")
        return None

    committed = (s for s in plan.iter_shards() if manifest.committed[s.ordinal])
    return dict(found for found in bounded_map(compare, committed, store.read_concurrency) if found)


def withdraw_commits(store: OutputStore, plan: Plan, broken: dict[int, str]) -> None:
    """Withdraw these commits in the store and in a new manifest version; CommitsWithdrawn."""
    for ordinal, why in broken.items():
        log.warning("job %s, shard %s: %s; its commit is withdrawn and the shard will be computed again",
                    plan.job_id, plan.shard_at(ordinal).shard_id, why)
    for _ in range(5):
        manifest = load_manifest(store, plan.shards_total)
        for ordinal in broken:
            record = store.load_commit(plan.shard_at(ordinal).shard_id)
            if record is not None:
                store.withdraw_commit(record)
                manifest.withdraw_commit(ordinal, record)
        if save_manifest(store, manifest):
            break
    store.drop_success()
    raise CommitsWithdrawn(sorted(broken), list(broken.values()))


def check_output_ids(store: OutputStore, plan: Plan, manifest: Manifest,
                     keep_alive: Callable[[], None] = lambda: None) -> tuple[int, int, np.ndarray, list[int]]:
    """(rows in the committed data files, ids seen twice, rows per shard's file, ordinals whose file
    is gone), reading only their id columns, a few files at a time; memory stays bounded (the
    duplicate finder spills to disk; the counts are 4 bytes a shard)."""
    finder = DuplicateFinder(total_bytes=manifest.rows_out * 24)
    rows, batch, missing = 0, [], []
    counts = np.zeros(plan.shards_total, dtype=np.int32)
    try:
        committed = (s for s in plan.iter_shards() if manifest.committed[s.ordinal])
        reads = bounded_map(lambda s: (s.ordinal, read_ids(store, store.data_key(s.shard_id))), committed,
                            store.read_concurrency)
        for index, (ordinal, ids) in enumerate(reads):
            if ids is None:
                missing.append(ordinal)
                continue
            counts[ordinal] = len(ids)
            batch.append((index, ids))
            rows += len(ids)
            if sum(len(i) for _, i in batch) >= ID_BATCH or index % 1000 == 999:
                add_ids(finder, batch)
                batch = []
                keep_alive()
        add_ids(finder, batch)
        return rows, finder.finish(), counts, missing
    finally:
        finder.close()


def add_ids(finder: DuplicateFinder, batch: list[tuple[int, pa.Array]]) -> None:
    """Many files' id columns added at once: one call per file costs more than the work it does."""
    if not batch:
        return
    indexes = np.concatenate([np.full(len(ids), index, np.int32) for index, ids in batch])
    rows = np.concatenate([np.arange(len(ids)) for _, ids in batch])
    finder.add_batch(indexes, rows, pa.chunked_array([ids for _, ids in batch]).combine_chunks())


def bounded_map(fn, items: Iterable, threads: int) -> Iterator:
    """fn over items on `threads` threads, in order, with at most 4 x threads in flight (a pool's
    own map would take every item at once: a future and a result per shard of the job)."""
    with ThreadPoolExecutor(threads) as pool:
        pending: deque = deque()
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= 4 * threads:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def read_ids(store: OutputStore, key: str, column: str = "id") -> pa.Array | None:
    """A data file's id column, or another (None when the file is gone). One read of its tail,
    which for a small file is the whole file; a larger one needs a second read for the column (its
    footer says where)."""
    import io

    try:
        tail = store.read_range(key, -SMALL_FILE_BYTES, 0)
    except FileNotFoundError:
        return None
    if len(tail) < SMALL_FILE_BYTES:
        return pq.ParquetFile(io.BytesIO(tail)).read(columns=[column], use_threads=False).column(0).combine_chunks()
    with store.open_read(key) as f:
        return pq.ParquetFile(f).read(columns=[column], use_threads=False).column(0).combine_chunks()
