"""Finding ids that occur more than once, in memory that does not grow with the corpus."""

import heapq
import shutil
import tempfile
import threading
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

GROUP_ROWS = 65_536  # rows per row group of the stored table: a shard reads the groups its rows fall in
DUPLICATE_SCHEMA = pa.schema([("file_index", pa.int32()), ("row", pa.int64()), ("id", pa.string()),
                              ("first_file_index", pa.int32()), ("first_row", pa.int64())])


class DuplicateFinder:
    """Finds ids that occur more than once, in bounded memory.

    Ids are spilled to hash partitions on disk while the corpus streams by, a batch at a time, as
    Arrow arrays (a Parquet id column never becomes Python objects: `add_array`); each partition
    is then checked with Arrow's value counts, so only ids that really repeat ever become Python
    objects. The first occurrence (file order, then row order) stays; every later one is listed,
    and becomes a reject naming the first. Batches may come in any order (files scanned on several
    threads): the first occurrence is decided by (file, row), not by arrival.
    """

    FLUSH_IDS = 262_144  # ids buffered before they go to disk
    MAX_IDS_AT_ONCE = 200_000  # ids of one partition checked in memory at once (tens of MB)
    BYTES_PER_PARTITION = 16 << 20  # of input; a partition then holds a few hundred thousand ids
    MAX_PARTITIONS = 256  # open spill files at once

    def __init__(self, total_bytes: int):
        self.partitions = max(1, min(self.MAX_PARTITIONS, total_bytes // self.BYTES_PER_PARTITION + 1))
        self.dir = Path(tempfile.mkdtemp(prefix="q3b-ids-"))
        self.buffered: list[pa.Table] = []
        self.buffered_rows = 0
        self.writers = [None] * self.partitions
        self.sizes = [0] * self.partitions
        self.all_int = True
        self.any_id = False
        self.lock = threading.Lock()

    @property
    def id_type(self) -> str:
        return "int64" if (self.all_int and self.any_id) else "string"

    def add(self, file_index: int, rows: list[int], ids: list) -> None:
        """Ids as Python values (common.io.corpus.normalize_id: int, str or None for missing)."""
        kept = [(row, value) for row, value in zip(rows, ids) if value is not None]
        if not kept:
            return
        all_int = all(isinstance(v, int) for _, v in kept)
        keys = pa.array([str(v) for _, v in kept], pa.string())
        rows_array = np.fromiter((r for r, _ in kept), np.int64, len(kept))
        self._add(np.full(len(kept), file_index, np.int32), rows_array, keys, all_int)

    def add_array(self, file_index: int, first_row: int, ids: pa.Array) -> None:
        """An Arrow id column as it was read, rows first_row.. of one file."""
        self.add_batch(np.full(len(ids), file_index, np.int32), np.arange(first_row, first_row + len(ids)), ids)

    def add_batch(self, file_indexes: np.ndarray, rows: np.ndarray, ids: pa.Array) -> None:
        """Ids of any files and rows, as Arrow: ints and non-empty strings are ids, anything else
        (nulls, empty strings, floats, nested values) is missing, as common.io.corpus.normalize_id
        says for single values. Many small columns are best added as one batch."""
        if isinstance(ids, pa.ChunkedArray):
            ids = ids.combine_chunks()
        if pa.types.is_dictionary(ids.type):
            ids = ids.cast(ids.type.value_type)
        if pa.types.is_integer(ids.type) and not pa.types.is_boolean(ids.type):
            valid = ids.is_valid()
            keys, all_int = pc.cast(ids, pa.string()), True
        elif pa.types.is_string(ids.type) or pa.types.is_large_string(ids.type):
            valid = pc.greater(pc.binary_length(ids), 0).fill_null(False)
            keys, all_int = ids.cast(pa.string()), False
        else:
            return
        mask = valid.to_numpy(zero_copy_only=False)
        if not mask.all():
            keys, rows, file_indexes = keys.filter(valid), rows[mask], file_indexes[mask]
        if len(keys):
            self._add(file_indexes.astype(np.int32), rows.astype(np.int64), keys, all_int)

    def _add(self, file_indexes: np.ndarray, rows: np.ndarray, keys: pa.Array, all_int: bool) -> None:
        parts = (string_hash(keys) % np.uint64(self.partitions)).astype(np.int32)
        table = pa.table({"id": keys, "file_index": pa.array(file_indexes), "row": pa.array(rows),
                          "part": pa.array(parts)})
        with self.lock:
            self.any_id = True
            self.all_int = self.all_int and all_int
            self.buffered.append(table)
            self.buffered_rows += len(keys)
            if self.buffered_rows >= self.FLUSH_IDS:
                self._flush()

    def _flush(self) -> None:
        if not self.buffered:
            return
        table = pa.concat_tables(self.buffered)
        self.buffered, self.buffered_rows = [], 0
        parts = table.column("part")
        table = table.drop_columns(["part"])
        for p in pc.unique(parts).to_pylist():
            part = table.filter(pc.equal(parts, p))
            if self.writers[p] is None:
                self.writers[p] = pa.ipc.new_stream(self.dir / f"{p}.arrow", part.schema)
            self.writers[p].write_table(part)
            self.sizes[p] += len(part)

    def finish(self, out_path: Path | None = None) -> int:
        """How many ids repeat an earlier one; with out_path, their table, in corpus order. Memory
        stays bounded: a partition too large to check at once is split again on disk first, and
        the per-partition lists of duplicates are merged from disk as they are written."""
        self._flush()
        for w in self.writers:
            if w is not None:
                w.close()
        found, count = [], 0
        for p in range(self.partitions):
            for path in self._checkable(self.dir / f"{p}.arrow", self.sizes[p], level=1):
                dups = self._duplicates_in(path)
                count += len(dups)
                if len(dups) and out_path is not None:
                    found.append(path.with_suffix(".dups.arrow"))
                    with pa.ipc.new_stream(found[-1], dups.schema) as writer:
                        writer.write_table(dups)
        if count and out_path is not None:
            write_merged(found, out_path)
        return count

    def _checkable(self, path: Path, size: int, level: int) -> list[Path]:
        """The partition file, or the files it splits into (by other bits of the same hash) when it
        holds more ids than MAX_IDS_AT_ONCE: a corpus whose ids are many and short has more of them
        per byte than the partition count assumed."""
        if not path.exists():
            return []
        if size <= self.MAX_IDS_AT_ONCE or level > 4:
            return [path]
        pieces = -(-size // self.MAX_IDS_AT_ONCE)
        divisor = np.uint64(self.partitions ** level)
        writers, sizes = {}, Counter()
        with pa.ipc.open_stream(path) as reader:
            for batch in reader:
                sub = ((string_hash(batch.column(0)) // divisor) % np.uint64(pieces)).astype(np.int32)
                for q in np.unique(sub).tolist():
                    part = pa.Table.from_batches([batch]).filter(pa.array(sub == q))
                    if q not in writers:
                        writers[q] = pa.ipc.new_stream(path.with_name(f"{path.stem}-{q}.arrow"), part.schema)
                    writers[q].write_table(part)
                    sizes[q] += len(part)
        for writer in writers.values():
            writer.close()
        path.unlink()
        return [p for q in sorted(writers)
                for p in self._checkable(path.with_name(f"{path.stem}-{q}.arrow"), sizes[q], level + 1)]

    @staticmethod
    def _duplicates_in(path: Path) -> pa.Table:
        """The later occurrences of the ids that repeat in one partition, in corpus order."""
        with pa.ipc.open_stream(path) as reader:
            table = reader.read_all()
        # value_counts is one kernel; group_by runs Acero's threaded hash tables, whose memory the
        # allocator keeps (measured: +100 MiB over a 1M-id corpus, against +35 MiB here).
        counts = pc.value_counts(table["id"])
        repeated = counts.field("values").filter(pc.greater(counts.field("counts"), 1))
        dups = []
        if len(repeated):
            table = table.filter(pc.is_in(table["id"], value_set=repeated))
            table = table.sort_by([("file_index", "ascending"), ("row", "ascending")])  # corpus order
            first: dict[str, tuple[int, int]] = {}
            for key, f, r in zip(*(table.column(c).to_pylist() for c in ("id", "file_index", "row"))):
                seen = first.get(key)
                if seen is None:
                    first[key] = (f, r)
                else:
                    dups.append((f, r, key, seen[0], seen[1]))
        columns = list(zip(*dups)) if dups else [[]] * len(DUPLICATE_SCHEMA)
        return pa.Table.from_arrays([pa.array(c, t.type) for c, t in zip(columns, DUPLICATE_SCHEMA)],
                                    schema=DUPLICATE_SCHEMA)

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


_FNV_PRIME = np.uint64(0x100000001B3)
_SAMPLES = 16  # bytes taken from across each id, besides its last 8


def string_hash(keys: pa.Array) -> np.ndarray:
    """A 64-bit hash of each string, computed over the Arrow buffers in numpy (no Python object
    per id): its length, 16 bytes spread across it and its last 8, mixed FNV-style. It decides
    only which spill partition an id goes to, so a collision costs balance, never correctness."""
    keys = keys.cast(pa.large_string())
    n = len(keys)
    validity, offsets, data = keys.buffers()
    offsets = np.frombuffer(offsets, dtype=np.int64)[keys.offset:keys.offset + n + 1]
    data = np.frombuffer(data, dtype=np.uint8) if data is not None and data.size else np.zeros(1, np.uint8)
    starts, lengths = offsets[:-1], offsets[1:] - offsets[:-1]
    h = np.full(n, 0xCBF29CE484222325, dtype=np.uint64) ^ lengths.astype(np.uint64)
    last = len(data) - 1
    with np.errstate(over="ignore"):
        h *= _FNV_PRIME
        for k in range(_SAMPLES + 8):  # one position array at a time: a batch's temporaries stay small
            offset = (lengths * k) // _SAMPLES if k < _SAMPLES else np.maximum(lengths - 1 - (k - _SAMPLES), 0)
            h ^= data[np.minimum(starts + offset, last)].astype(np.uint64)
            h *= _FNV_PRIME
    return h


def write_merged(paths: list[Path], out_path: Path) -> None:
    """The duplicates of every partition (each in corpus order) merged into one table in corpus
    order, streamed: its row groups' statistics let a shard read only the groups of its rows."""
    def rows(path: Path):
        with pa.ipc.open_stream(path) as reader:
            for batch in reader:
                yield from zip(*(batch.column(i).to_pylist() for i in range(batch.num_columns)))

    out_path.parent.mkdir(parents=True, exist_ok=True)
    with pq.ParquetWriter(out_path, DUPLICATE_SCHEMA) as writer:
        chunk = []
        for row in heapq.merge(*(rows(p) for p in paths), key=lambda r: (r[0], r[1])):
            chunk.append(row)
            if len(chunk) == GROUP_ROWS:
                writer.write_table(_dup_table(chunk), row_group_size=GROUP_ROWS)
                chunk = []
        if chunk:
            writer.write_table(_dup_table(chunk), row_group_size=GROUP_ROWS)


def _dup_table(rows: list[tuple]) -> pa.Table:
    return pa.Table.from_arrays([pa.array(c, t.type) for c, t in zip(zip(*rows), DUPLICATE_SCHEMA)],
                                schema=DUPLICATE_SCHEMA)
