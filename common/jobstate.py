"""A job's state, read from the output store alone (the durable truth), and its completion.

Redis may have lost everything (a restart without persistence): nothing here needs it.
"""

import time
from dataclasses import dataclass, field

import pyarrow.parquet as pq

from common.io.duplicates import DuplicateFinder
from common.io.output import METADATA_PREFIX
from common.io.store import OutputStore
from common.schemas import CommitRecord, Plan, QuarantineRecord, SuccessMarker


class JobCheckError(Exception):
    """The committed output contradicts the plan: a bug, never expected. Nothing is marked done."""


@dataclass
class JobState:
    plan: Plan
    commits: dict[str, CommitRecord]
    quarantined: dict[str, QuarantineRecord]
    cancelled: bool
    success: SuccessMarker | None = None
    pending: list[str] = field(default_factory=list)

    @property
    def rows_done(self) -> int:
        return sum(c.rows_in for c in self.commits.values())

    @property
    def rows_out(self) -> int:
        return sum(c.rows_out for c in self.commits.values())

    @property
    def rows_rejected(self) -> int:
        return sum(c.rows_rejected for c in self.commits.values())

    @property
    def tokens(self) -> int:
        return sum(c.tokens for c in self.commits.values())

    @property
    def finished(self) -> bool:
        return not self.pending

    @property
    def status(self) -> str:
        """From the records themselves, not from _SUCCESS.json, which may lag a late commit."""
        if self.finished:
            return "completed_with_failures" if self.quarantined else "completed"
        if self.cancelled:
            return "cancelled"
        return "running" if (self.commits or self.quarantined) else "queued"


def read_state(store: OutputStore, plan: Plan | None = None) -> JobState:
    plan = plan or store.load_plan()
    commits = store.list_commits()
    quarantined = {k: v for k, v in store.list_quarantined().items() if k not in commits}
    pending = [s.shard_id for s in plan.shards if s.shard_id not in commits and s.shard_id not in quarantined]
    return JobState(plan, commits, quarantined, store.is_cancelled(), store.load_success(), pending)


def finalize(store: OutputStore, state: JobState, verify_checksums: bool = True) -> SuccessMarker | None:
    """Write the success marker once every planned shard is committed or quarantined, after
    checking: rows out + rows rejected == rows in for every shard and in total, the files are
    those committed (checksums), and no id occurs twice in the output.

    The marker always describes the folder: one written before a late commit (a shard committed
    after it was quarantined) names other shards than the records do, and is written anew."""
    if not state.finished:
        return state.success
    if state.success is not None and describes(state.success, state):
        return state.success
    planned = {s.shard_id: s for s in state.plan.shards}
    for sid, c in state.commits.items():
        if sid not in planned:
            raise JobCheckError(f"commit {sid} is not in the plan")
        if c.rows_in != planned[sid].rows or c.rows_out + c.rows_rejected != c.rows_in:
            raise JobCheckError(f"shard {sid}: {c.rows_in} rows in (planned {planned[sid].rows}), "
                                f"{c.rows_out} out + {c.rows_rejected} rejected")
        store.publish(c)  # a crash between commit and publish is finished here
        if verify_checksums and not store.verify_file(c):
            raise JobCheckError(f"shard {sid}: {store.location(c.data_file)} is not the committed file")
    duplicates = count_duplicate_ids(store, state.commits)
    if duplicates:
        raise JobCheckError(f"{duplicates} ids occur more than once in {store.location('data')}")
    quarantined_rows = sum(planned[s].rows for s in state.quarantined)
    if state.rows_done + quarantined_rows != state.plan.rows_total:
        raise JobCheckError(f"{state.rows_done} rows committed + {quarantined_rows} in quarantined shards "
                            f"!= {state.plan.rows_total} planned")
    marker = SuccessMarker(
        job_id=state.plan.job_id, status="completed_with_failures" if state.quarantined else "completed",
        rows_in=state.plan.rows_total, rows_out=state.rows_out, rows_rejected=state.rows_rejected,
        rows_in_quarantined_shards=quarantined_rows, shards_committed=len(state.commits),
        shards_quarantined=tuple(sorted(state.quarantined)), finished_at=time.time(),
        **made_by(store, state.commits))
    store.save_success(marker)
    return marker


def made_by(store: OutputStore, commits: dict[str, CommitRecord]) -> dict:
    """simulated / random_weights, from the data files' own metadata (what every worker wrote)."""
    flags = {"simulated": False, "random_weights": False}
    for commit in commits.values():
        with store.open_read(commit.data_file) as f:
            meta = pq.read_schema(f).metadata or {}
        for name in flags:
            flags[name] |= meta.get(f"{METADATA_PREFIX}{name}".encode()) == b"true"
    return flags


def describes(marker: SuccessMarker, state: JobState) -> bool:
    """Whether a success marker still matches the commit and quarantine records."""
    return (marker.shards_committed == len(state.commits) and set(marker.shards_quarantined) == set(state.quarantined)
            and marker.rows_out == state.rows_out and marker.rows_rejected == state.rows_rejected)


def count_duplicate_ids(store: OutputStore, commits: dict[str, CommitRecord]) -> int:
    """Ids seen twice across the published data files, reading only their id columns."""
    total_bytes = sum(c.data_bytes or store.size(c.data_file) for c in commits.values())
    finder = DuplicateFinder(total_bytes)
    try:
        for index, c in enumerate(sorted(commits.values(), key=lambda c: c.shard_id)):
            with store.open_read(c.data_file) as f:
                offset = 0
                for batch in pq.ParquetFile(f).iter_batches(columns=["id"]):
                    ids = batch.column(0).to_pylist()
                    finder.add(index, list(range(offset, offset + len(ids))), ids)
                    offset += len(ids)
        return finder.finish()
    finally:
        finder.close()
