"""A job's output read the way an independent checker reads it: every commit and quarantine record,
for tests, benchmarks and rehearsals. The runtime never does this (it reads the folded manifest,
common/jobstate.py); a checker must not trust the manifest it is checking."""

import time
from dataclasses import dataclass
from pathlib import Path

from common.io.manifest import load_manifest
from common.io.plans import Plan, load_plan
from common.io.store import COMMITS, QUARANTINE, OutputStore
from common.jobstate import describes
from common.schemas import CommitRecord, QuarantineRecord, SuccessMarker


@dataclass
class Records:
    plan: Plan
    commits: dict[str, CommitRecord]
    quarantined: dict[str, QuarantineRecord]  # without the shards committed after all
    success: SuccessMarker | None

    @property
    def rows_out(self) -> int:
        return sum(c.rows_out for c in self.commits.values())

    @property
    def rows_rejected(self) -> int:
        return sum(c.rows_rejected for c in self.commits.values())

    @property
    def pending(self) -> list[str]:
        return [s.shard_id for s in self.plan.iter_shards()
                if s.shard_id not in self.commits and s.shard_id not in self.quarantined]

    @property
    def finished(self) -> bool:
        """Every shard committed or quarantined, and the success marker written for exactly that."""
        if self.pending or self.success is None:
            return False
        return describes(self.success, load_manifest(self.plan.store, self.plan.shards_total))


def _load_all(store: OutputStore, folder: str, model) -> dict:
    out = {}
    for name in store.names(folder):
        if name.endswith(".json") and not name.startswith("."):
            body = store.read_bytes(f"{folder}/{name}")
            if body is not None:
                out[name[:-5]] = model.model_validate_json(body)
    return out


def commit_records(out: str | Path | OutputStore) -> dict[str, CommitRecord]:
    store = out if isinstance(out, OutputStore) else OutputStore(out)
    return _load_all(store, COMMITS, CommitRecord)


def read_records(out: str | Path | OutputStore) -> Records:
    store = out if isinstance(out, OutputStore) else OutputStore(out)
    commits = commit_records(store)
    quarantined = {k: v for k, v in _load_all(store, QUARANTINE, QuarantineRecord).items() if k not in commits}
    return Records(load_plan(store), commits, quarantined, store.load_success())


def wait_until_finished(out: str | Path | OutputStore, timeout_s: float = 300) -> Records:
    """Poll until the job's success marker describes its records (the end-of-job check ran)."""
    store = out if isinstance(out, OutputStore) else OutputStore(out)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if store.has_plan() and store.load_success() is not None:
            records = read_records(store)
            if records.finished:
                return records
        time.sleep(0.25)
    raise TimeoutError(f"job in {store.url} did not finish in {timeout_s}s")
