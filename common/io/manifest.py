"""A job's progress, folded from its commit and quarantine records into one object of the store.

    _progress/<version>.json   which shards are committed and which quarantined (two bitmaps by
                               ordinal), the totals of their records, the first quarantine reasons

Status, followers and the end of a job read this one object, never every record: a job of 5e5
shards is two 62 KB bitmaps (compressed far below that while the job runs). It is a cache of the
records, which stay the truth: it is only ever extended by records read from the store
(common/jobstate.fold), so nothing in Redis can make it say a shard is done that is not.

Versions are created only if absent, like commit records: two processes folding at once (a lock
lost with Redis) cannot overwrite each other; the loser reads the winner's version and folds again
(folding a record twice changes nothing). The newest version is the one with the highest number;
older ones are pruned, a few kept for readers that listed them a moment before.
"""

import base64
import json
import time
import zlib
from dataclasses import dataclass, field

import numpy as np

from common.io.store import PROGRESS, OutputStore
from common.schemas import CommitRecord, QuarantineRecord

KEEP_VERSIONS = 3
MAX_REASONS = 100  # quarantine reasons kept in the manifest; every quarantined shard has its record


@dataclass
class Manifest:
    shards_total: int
    version: int = 0
    committed: np.ndarray = None  # bool by ordinal
    quarantined: np.ndarray = None  # bool by ordinal; never True where committed is
    rows_done: int = 0  # rows in committed shards
    rows_out: int = 0
    rows_rejected: int = 0
    tokens: int = 0
    rows_deduplicated: int = 0  # of rows_out: copied, not computed (see CommitRecord)
    rows_reused: int = 0
    rows_in_quarantined: int = 0
    simulated: bool = False
    random_weights: bool = False
    reasons: dict[str, str] = field(default_factory=dict)  # shard id -> reason, the first MAX_REASONS
    problems: list[str] = field(default_factory=list)  # records or files that contradict the plan
    updated_at: float = 0.0

    def __post_init__(self):
        if self.committed is None:
            self.committed = np.zeros(self.shards_total, dtype=bool)
        if self.quarantined is None:
            self.quarantined = np.zeros(self.shards_total, dtype=bool)

    # --- reading ------------------------------------------------------------------------------------
    @property
    def shards_committed(self) -> int:
        return int(np.count_nonzero(self.committed))

    @property
    def shards_quarantined(self) -> int:
        return int(np.count_nonzero(self.quarantined))

    @property
    def shards_pending(self) -> int:
        return self.shards_total - self.shards_committed - self.shards_quarantined

    @property
    def finished(self) -> bool:
        return self.shards_pending == 0

    def done(self, ordinal: int) -> bool:
        return bool(self.committed[ordinal] or self.quarantined[ordinal])

    def done_mask(self) -> np.ndarray:
        return self.committed | self.quarantined

    def quarantined_ordinals(self) -> list[int]:
        return np.flatnonzero(self.quarantined).tolist()

    # --- folding one record in (common/jobstate.fold reads them from the store) ---------------------
    def add_commit(self, ordinal: int, record: CommitRecord, planned_rows: int) -> None:
        if self.committed[ordinal]:
            return
        if record.rows_in != planned_rows or record.rows_out + record.rows_rejected != record.rows_in:
            self.problems.append(f"shard {record.shard_id}: {record.rows_in} rows in (planned {planned_rows}), "
                                 f"{record.rows_out} out + {record.rows_rejected} rejected")
            return
        if self.quarantined[ordinal]:  # a late commit of a shard given up on: it counts as committed
            self.quarantined[ordinal] = False
            self.rows_in_quarantined -= planned_rows
            self.reasons.pop(record.shard_id, None)
        self.committed[ordinal] = True
        self.rows_done += record.rows_in
        self.rows_out += record.rows_out
        self.rows_rejected += record.rows_rejected
        self.tokens += record.tokens
        self.rows_deduplicated += record.rows_deduplicated
        self.rows_reused += record.rows_reused
        self.simulated |= record.simulated
        self.random_weights |= record.random_weights

    def add_quarantine(self, ordinal: int, record: QuarantineRecord, planned_rows: int) -> None:
        if self.committed[ordinal] or self.quarantined[ordinal]:
            return
        self.quarantined[ordinal] = True
        self.rows_in_quarantined += planned_rows
        if len(self.reasons) < MAX_REASONS:
            self.reasons[record.shard_id] = record.reason

    def withdraw_commit(self, ordinal: int, record: CommitRecord) -> None:
        """A commit whose files turned out gone or wrong (common/jobstate.withdraw_commits): pending again."""
        if not self.committed[ordinal]:
            return
        self.committed[ordinal] = False
        self.rows_done -= record.rows_in
        self.rows_out -= record.rows_out
        self.rows_rejected -= record.rows_rejected
        self.tokens -= record.tokens
        self.rows_deduplicated -= record.rows_deduplicated
        self.rows_reused -= record.rows_reused

    def clear_quarantine(self, ordinals: list[int], rows: list[int], shard_ids: list[str]) -> None:
        """`resume --retry-quarantined`: these shards are pending again."""
        for ordinal, planned_rows, shard_id in zip(ordinals, rows, shard_ids):
            if self.quarantined[ordinal]:
                self.quarantined[ordinal] = False
                self.rows_in_quarantined -= planned_rows
                self.reasons.pop(shard_id, None)

    # --- the stored form ----------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        body = {k: getattr(self, k) for k in ("shards_total", "version", "rows_done", "rows_out", "rows_rejected",
                                              "tokens", "rows_deduplicated", "rows_reused",
                                              "rows_in_quarantined", "simulated", "random_weights",
                                              "reasons", "problems", "updated_at")}
        body["committed"], body["quarantined"] = _pack(self.committed), _pack(self.quarantined)
        return json.dumps(body, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, raw: bytes, shards_total: int) -> "Manifest":
        body = json.loads(raw)
        if body.get("shards_total") != shards_total:
            raise ValueError(f"a manifest of {body.get('shards_total')} shards, for a plan of {shards_total}")
        committed = _unpack(body.pop("committed"), shards_total)
        quarantined = _unpack(body.pop("quarantined"), shards_total)
        return cls(committed=committed, quarantined=quarantined & ~committed, **body)


def _pack(bits: np.ndarray) -> str:
    return base64.b64encode(zlib.compress(np.packbits(bits).tobytes(), 6)).decode()


def _unpack(text: str, n: int) -> np.ndarray:
    packed = np.frombuffer(zlib.decompress(base64.b64decode(text)), dtype=np.uint8)
    return np.unpackbits(packed, count=n).astype(bool)


def version_key(version: int) -> str:
    return f"{PROGRESS}/{version:012d}.json"


def stored_versions(store: OutputStore) -> list[int]:
    return sorted(int(name[:-5]) for name in store.names(PROGRESS) if name.endswith(".json") and name[:-5].isdigit())


def load_manifest(store: OutputStore, shards_total: int, known: Manifest | None = None) -> Manifest:
    """The newest manifest (an empty one before the first fold). `known`: a manifest this process
    read earlier, returned as it is when no newer version exists (one listing, no read)."""
    for _ in range(5):  # a version pruned between the listing and the read: list again
        versions = stored_versions(store)
        if not versions:
            return known or Manifest(shards_total)
        if known is not None and known.version >= versions[-1]:
            return known
        raw = store.read_bytes(version_key(versions[-1]))
        if raw is not None:
            return Manifest.from_bytes(raw, shards_total)
    raise RuntimeError(f"{store.location(PROGRESS)}: the newest manifest vanished five times while being read")


def save_manifest(store: OutputStore, manifest: Manifest) -> bool:
    """Store `manifest` as the version after the one it was read as; False when another process
    stored that version first (read it, fold again). Older versions beyond KEEP_VERSIONS go."""
    manifest.version += 1
    manifest.updated_at = time.time()
    if not store.create_if_absent(version_key(manifest.version), manifest.to_bytes()):
        manifest.version -= 1
        return False
    if manifest.version > KEEP_VERSIONS:  # versions go up one at a time: the one that falls out
        store.delete(version_key(manifest.version - KEEP_VERSIONS))
    return True
