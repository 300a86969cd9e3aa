"""The values a shard copies instead of computing them (the plan's sources table, common/io/content.py).

Before its first chunk, a shard reads what it copies from other files: the rows of earlier shards
of its own job that first held an input (from their committed data files), and the rows of
--reuse sources. Each file is read once, and only its row groups that hold a wanted row (a
row's place in its file is known, or bounded by its shard's rejects). A copy of a row of the same
shard takes the value computed a moment before. Whatever is not there when it is wanted (a shard
not committed yet, a row that was rejected, a file gone or unreadable) is computed instead: a
copy never fails a shard. Every value is matched by its content hash, never by position alone.
"""

import logging
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from common.io.content import HASH_BYTES, HASH_TYPE, NEW, hash_bytes
from common.io.output import HASH_COLUMN
from common.io.plans import Plan
from common.io.store import OutputStore
from common.jobstate import bounded_map
from common.schemas import ShardSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Copied:
    value: object  # one row's embedding (a numpy vector) or score (a float)
    n_tokens: int
    truncated: bool
    reused: bool  # from a --reuse source, not from this job


@dataclass
class Wanted:
    """The rows one file is read for: their hashes, and where in the file they may be."""

    hashes: set
    spans: list  # (first, last) row of the file, inclusive

    def add(self, digest: bytes, first: int, last: int) -> None:
        self.hashes.add(digest)
        self.spans.append((first, last))


class ShardCopies:
    """The copy plan of one shard, and the values found for it."""

    def __init__(self, store: OutputStore, plan: Plan, shard: ShardSpec, value_column: str):
        self.store, self.plan, self.shard, self.value_column = store, plan, shard, value_column
        table = plan.sources_in(shard)
        digests = _hashes(table.column("hash")) if len(table) else []
        columns = {name: table.column(name).to_pylist() for name in ("row", "origin", "ref", "pos")}
        # row in file -> (hash, origin, ref, pos): at most one entry per row of the shard
        self.planned = {row: (h, origin, ref, pos) for row, h, origin, ref, pos in
                        zip(columns["row"], digests, columns["origin"], columns["ref"], columns["pos"])}
        self.sources = {OutputStore(url).url for url in plan.spec.reuse}  # the only stores a reuse file may be in
        self.keep = {h for h, origin, ref, _ in self.planned.values() if origin == NEW and ref == shard.ordinal}
        self.found: dict[bytes, Copied] = {}  # read from other files before the first chunk
        self.own: dict[bytes, Copied] = {}  # computed in this shard, for its later rows of the same input

    def fetch(self) -> None:
        """Read every other file this shard copies from (a few at a time)."""
        if not self.planned:
            return
        wanted: dict[tuple, Wanted] = {}
        for h, origin, ref, pos in self.planned.values():
            if origin == NEW and ref == self.shard.ordinal:
                continue
            key = ("job", ref) if origin == NEW else ("reuse", ref)
            wanted.setdefault(key, Wanted(set(), [])).add(h, pos, pos)
        for found in bounded_map(self._read, list(wanted.items()), self.store.read_concurrency):
            self.found.update(found)

    def _read(self, item: tuple[tuple, Wanted]) -> dict[bytes, Copied]:
        (kind, ref), wanted = item
        try:
            if kind == "job":
                located = self._in_job(ref, wanted)
            else:
                located = self._in_reuse_source(ref)
            if located is None:
                return {}
            store, key, size, spans, reused = located
            return self._values(store, key, size, spans or wanted.spans, wanted.hashes, reused)
        except Exception as exc:  # a copy never fails a shard: its rows are computed
            log.warning("shard %s: values to copy could not be read (%s); those rows are computed",
                        self.shard.shard_id, exc)
            return {}

    def _in_job(self, ordinal: int, wanted: Wanted):
        """Another shard of this job: its committed data file, where the rows lie between their
        offset in the shard less the shard's rejects and that offset."""
        if not 0 <= ordinal < self.plan.shards_total:
            return None
        owner = self.plan.shard_at(ordinal)
        record = self.store.load_commit(owner.shard_id)
        if record is None:
            return None  # not committed yet: computed here
        spans = [(max(0, first - owner.row_start - record.rows_rejected), last - owner.row_start)
                 for first, last in wanted.spans]
        return self.store, record.data_file, record.data_bytes or None, spans, False

    def _in_reuse_source(self, file_no: int):
        if file_no < 0:
            return None
        info = self.plan.reuse_file(file_no)
        if info["url"] not in self.sources:
            log.warning("shard %s: the plan names a reuse file in %s, which is not among the job's --reuse "
                        "sources; not read", self.shard.shard_id, info["url"])
            return None
        return OutputStore(info["url"]), info["key"], info["size"] or None, None, True

    def _values(self, store: OutputStore, key: str, size: int | None, spans: list, hashes: set,
                reused: bool) -> dict[bytes, Copied]:
        with store.open_read(key, size=size) as f:
            pf = pq.ParquetFile(f)
            groups, first = [], 0
            for g in range(pf.metadata.num_row_groups):
                n = pf.metadata.row_group(g).num_rows
                if any(lo < first + n and hi >= first for lo, hi in spans):
                    groups.append(g)
                first += n
            if not groups:
                return {}
            table = pf.read_row_groups(groups, columns=[HASH_COLUMN, self.value_column, "n_tokens", "truncated"])
        wanted = pa.array(list(hashes), type=HASH_TYPE)
        table = table.filter(pc.is_in(table.column(HASH_COLUMN), value_set=wanted))
        values = table.column(self.value_column).combine_chunks()
        if pa.types.is_fixed_size_list(values.type):
            values = values.flatten().to_numpy(zero_copy_only=False).reshape(len(table), values.type.list_size)
        else:
            values = values.to_numpy(zero_copy_only=False)
        return {h: Copied(v, int(n), bool(t), reused) for h, v, n, t in
                zip(_hashes(table.column(HASH_COLUMN)), values, table.column("n_tokens").to_pylist(),
                    table.column("truncated").to_pylist())}

    # --- during the shard ------------------------------------------------------------------------------
    def known(self, row) -> Copied | None:
        """A value read from another file for this row (read once, before the first chunk)."""
        planned = self.planned.get(row.index)
        if planned is None or planned[0] != row.hash:
            return None
        return self.found.get(row.hash)

    def awaits_own(self, row) -> bool:
        """The row copies an earlier row of this shard (computed by the time this row's chunk runs)."""
        planned = self.planned.get(row.index)
        return planned is not None and planned[0] == row.hash and planned[0] in self.keep

    def remember(self, row, value, n_tokens: int, truncated: bool) -> None:
        if row.hash in self.keep and row.hash not in self.own:
            self.own[row.hash] = Copied(value, int(n_tokens), bool(truncated), False)

    def own_value(self, row) -> Copied | None:
        return self.own.get(row.hash)


def _hashes(column) -> list[bytes]:
    raw = hash_bytes(column)
    return [raw[i:i + HASH_BYTES] for i in range(0, len(raw), HASH_BYTES)]
