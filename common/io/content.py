"""Each distinct input computed once: content hashes, and the plan's table of rows that copy a value.

Every runnable row's input (its text, or its query and document) has a content hash, BLAKE2b-128
of its UTF-8 bytes (`content_hash`), which every data file keeps in its `input_hash` column.
Planning joins the corpus's hashes with each other (copies inside the job) and with the
`input_hash` columns of earlier outputs (`--reuse`), in bounded memory: the hashes are spilled to
disk in hash partitions as the scan goes (30 bytes a row), and each partition is joined in numpy
(no Python object per row). The join writes one table, in corpus order, naming for each row that
needs no computing where its value comes from:

    origin -1  a row of this job, the input's first occurrence: ref = its shard's ordinal,
               pos = its row in its file
    origin k   reuse source k (0, 1, ...): ref = the number of the data file in the reuse file
               table, pos = the row in that data file

A first occurrence in this job is computed; so is every row of a hash no reuse source holds and
that occurs once. When a row's source is not there when its shard runs (the first occurrence's
shard not committed yet, or that row rejected; a reused file gone), the row is computed instead:
a plan never makes a row wait, and never loses one.
"""

import hashlib
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

HASH_BYTES = 16
HASH_TYPE = pa.binary(HASH_BYTES)
GROUP_ROWS = 65_536  # rows per row group of the stored table: a shard reads the groups its rows fall in
NEW = -1  # origin of a corpus row (and of a source row in this job)

# One spilled hash: 30 bytes on disk
RECORD = np.dtype([("h1", "<u8"), ("h2", "<u8"), ("row", "<i8"), ("file", "<i4"), ("origin", "<i2")])
# One row that copies a value, between the join and the stored table
RESULT = np.dtype([("file", "<i4"), ("row", "<i8"), ("h1", "<u8"), ("h2", "<u8"), ("origin", "<i2"),
                   ("ref", "<i8"), ("pos", "<i8")])
SOURCES_SCHEMA = pa.schema([("file_index", pa.int32()), ("row", pa.int64()), ("hash", HASH_TYPE),
                            ("origin", pa.int16()), ("ref", pa.int64()), ("pos", pa.int64())])


def content_hash(values) -> bytes:
    """The hash of one row's input: each value's UTF-8 bytes, length-prefixed (a query and document
    pair never hashes as another split of the same bytes)."""
    h = hashlib.blake2b(digest_size=HASH_BYTES)
    for value in values:
        raw = value.encode("utf-8")
        h.update(len(raw).to_bytes(8, "little"))
        h.update(raw)
    return h.digest()


def hash_arrays(columns: list[pa.Array], valid: np.ndarray) -> bytes:
    """content_hash of each row of Arrow string columns, straight from their buffers (no str per
    row), 16 bytes a row, zeros where `valid` is False."""
    n = len(valid)
    buffers = []
    for column in columns:
        column = column.cast(pa.large_string())
        _, offsets, data = column.buffers()
        offsets = np.frombuffer(offsets, dtype=np.int64)[column.offset:column.offset + n + 1].tolist()
        buffers.append((offsets, memoryview(data) if data is not None else memoryview(b"")))
    out = bytearray(HASH_BYTES * n)
    blake2b = hashlib.blake2b
    for i in np.flatnonzero(valid).tolist():
        h = blake2b(digest_size=HASH_BYTES)
        for offsets, data in buffers:
            start, end = offsets[i], offsets[i + 1]
            h.update((end - start).to_bytes(8, "little"))
            h.update(data[start:end])
        out[i * HASH_BYTES:(i + 1) * HASH_BYTES] = h.digest()
    return bytes(out)


def runnable(columns: list[pa.Array], ids: pa.Array | None) -> np.ndarray:
    """Rows a shard may run: every text present and a string, and the id present. A blank text
    needs no check here: its copies are as blank, and a shard rejects them all alike; a row judged
    otherwise at run time is only computed, never lost."""
    mask = np.ones(len(columns[0]), dtype=bool)
    for column in columns:
        if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
            return np.zeros(len(column), dtype=bool)
        mask &= column.is_valid().to_numpy(zero_copy_only=False)
    if ids is not None:
        mask &= ids.is_valid().to_numpy(zero_copy_only=False)
    return mask


def hash_bytes(column) -> bytes:
    """An input_hash column's values, concatenated (16 bytes a row), straight from its buffer."""
    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    start = column.offset * HASH_BYTES
    return np.frombuffer(column.buffers()[1], dtype=np.uint8)[start:start + len(column) * HASH_BYTES].tobytes()


def split_hashes(digests: bytes) -> tuple[np.ndarray, np.ndarray]:
    pairs = np.frombuffer(digests, dtype="<u8").reshape(-1, 2)
    return pairs[:, 0], pairs[:, 1]


def hash_column(h1: np.ndarray, h2: np.ndarray) -> pa.Array:
    pairs = np.empty((len(h1), 2), dtype="<u8")
    pairs[:, 0], pairs[:, 1] = h1, h2
    return pa.FixedSizeBinaryArray.from_buffers(HASH_TYPE, len(h1), [None, pa.py_buffer(pairs.tobytes())])


class ContentIndex:
    """The hashes of a corpus (and of its reuse sources), spilled to hash partitions on disk, and
    the join that finds the rows needing no computing (see the module's docstring)."""

    FLUSH_RECORDS = 1 << 18  # records buffered before they go to disk (8 MB)
    MAX_AT_ONCE = 1 << 19  # records of one partition joined in memory at once (15 MB, about 70 MB with the sort)
    RECORDS_PER_PARTITION = 1 << 19
    MAX_PARTITIONS = 256  # open spill files at once

    def __init__(self, expected_records: int, dedup: bool = True):
        self.dedup = dedup  # False: only the reuse sources' rows are copied (--no-dedup)
        self.partitions = int(max(1, min(self.MAX_PARTITIONS, expected_records // self.RECORDS_PER_PARTITION + 1)))
        self.dir = Path(tempfile.mkdtemp(prefix="q3b-content-"))
        self.buffered: list[np.ndarray] = []
        self.buffered_records = 0
        self.files = [None] * self.partitions
        self.records = 0
        self.copies = 0  # found by finish()
        self.reusable = 0

    # --- spilling ---------------------------------------------------------------------------------------
    def add(self, file_index: int, rows: np.ndarray, digests: bytes) -> None:
        """Corpus rows of one file, with their 16-byte hashes concatenated."""
        self._add(rows, file_index, NEW, digests)

    def add_source(self, origin: int, file_no: int, digests: bytes) -> None:
        """The rows of one data file of reuse source `origin`, in order."""
        self._add(np.arange(len(digests) // HASH_BYTES, dtype=np.int64), file_no, origin, digests)

    def _add(self, rows: np.ndarray, file: int, origin: int, digests: bytes) -> None:
        if not len(rows):
            return
        h1, h2 = split_hashes(digests)
        records = np.empty(len(rows), dtype=RECORD)
        records["h1"], records["h2"], records["row"] = h1, h2, rows
        records["file"], records["origin"] = file, origin
        self.buffered.append(records)
        self.buffered_records += len(records)
        self.records += len(records)
        if self.buffered_records >= self.FLUSH_RECORDS:
            self._flush()

    def _flush(self) -> None:
        if not self.buffered:
            return
        records = np.concatenate(self.buffered)
        self.buffered, self.buffered_records = [], 0
        parts = records["h1"] % np.uint64(self.partitions)
        order = np.argsort(parts, kind="stable")
        records, parts = records[order], parts[order]
        bounds = np.searchsorted(parts, np.arange(self.partitions + 1, dtype=np.uint64))
        for p in range(self.partitions):
            if bounds[p] < bounds[p + 1]:
                if self.files[p] is None:
                    self.files[p] = open(self.dir / f"{p}.bin", "ab")
                records[bounds[p]:bounds[p + 1]].tofile(self.files[p])

    # --- the join ---------------------------------------------------------------------------------------
    def finish(self, out_path: Path, file_row_base: np.ndarray, shard_starts: np.ndarray, rows_total: int) -> int:
        """Join every partition and write the rows needing no computing to `out_path`, in corpus
        order; returns how many. file_row_base: each input file's first row in the corpus;
        shard_starts: each shard's first row in the corpus, in ordinal order."""
        self._flush()
        for f in self.files:
            if f is not None:
                f.close()
        buckets = max(1, -(-rows_total // self.MAX_AT_ONCE))
        results = Buckets(self.dir / "results", buckets, rows_total)
        for p in range(self.partitions):
            for part in self._joinable(self.dir / f"{p}.bin", level=1):
                found = self._join(np.fromfile(part, dtype=RECORD), shard_starts, file_row_base)
                part.unlink()
                results.add(found, file_row_base)
        return results.write_sorted(out_path)

    def _joinable(self, path: Path, level: int) -> list[Path]:
        """The partition's file, or the files it splits into by other bits of the hash when it holds
        more records than MAX_AT_ONCE (a corpus far larger than the partition count assumed)."""
        if not path.exists():
            return []
        size = path.stat().st_size // RECORD.itemsize
        if size <= self.MAX_AT_ONCE or level > 4:
            return [path]
        pieces = -(-size // self.MAX_AT_ONCE)
        outs = {}
        with open(path, "rb") as f:
            while True:
                block = np.fromfile(f, dtype=RECORD, count=self.FLUSH_RECORDS)
                if not len(block):
                    break
                sub = (block["h2"] >> np.uint64(8 * level)) % np.uint64(pieces)
                for q in np.unique(sub).tolist():
                    if q not in outs:
                        outs[q] = open(path.with_name(f"{path.stem}-{q}.bin"), "ab")
                    block[sub == q].tofile(outs[q])
        for f in outs.values():
            f.close()
        path.unlink()
        return [p for q in sorted(outs) for p in self._joinable(path.with_name(f"{path.stem}-{q}.bin"), level + 1)]

    def _join(self, records: np.ndarray, shard_starts: np.ndarray, file_row_base: np.ndarray) -> np.ndarray:
        """The corpus rows of one partition that copy a value: for each hash, a reuse source's row
        if any holds it (the lowest source, file and row), else the corpus's first occurrence,
        which is computed; every other corpus row of the hash copies it."""
        n = len(records)
        if not n:
            return np.empty(0, dtype=RESULT)
        rank = np.where(records["origin"] == NEW, np.int32(1 << 20), records["origin"].astype(np.int32))
        records = records[np.lexsort((records["row"], records["file"], rank, records["h2"], records["h1"]))]
        index = np.arange(n)
        start = np.ones(n, dtype=bool)
        start[1:] = (records["h1"][1:] != records["h1"][:-1]) | (records["h2"][1:] != records["h2"][:-1])
        head = records[np.maximum.accumulate(np.where(start, index, 0))]
        copies = (records["origin"] == NEW) & ~start
        if not self.dedup:
            copies &= head["origin"] != NEW
        found, source = records[copies], head[copies]
        out = np.empty(len(found), dtype=RESULT)
        out["file"], out["row"], out["h1"], out["h2"] = found["file"], found["row"], found["h1"], found["h2"]
        out["origin"], out["pos"] = source["origin"], source["row"]
        from_job = source["origin"] == NEW
        owner_rows = file_row_base[source["file"][from_job]] + source["row"][from_job]
        out["ref"] = source["file"]
        out["ref"][from_job] = np.searchsorted(shard_starts, owner_rows, side="right") - 1
        self.copies += int(np.count_nonzero(from_job))
        self.reusable += int(np.count_nonzero(~from_job))
        return out

    def close(self) -> None:
        for f in self.files:
            if f is not None and not f.closed:
                f.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class Buckets:
    """Join results spilled by their place in the corpus, then each bucket sorted and appended to
    the table: the table comes out in corpus order with no merge of Python rows."""

    def __init__(self, folder: Path, count: int, rows_total: int):
        folder.mkdir(parents=True, exist_ok=True)
        self.folder, self.count, self.rows_total = folder, count, max(1, rows_total)

    def add(self, found: np.ndarray, file_row_base: np.ndarray) -> None:
        if not len(found):
            return
        corpus_rows = file_row_base[found["file"]] + found["row"]
        bucket = np.minimum(corpus_rows * self.count // self.rows_total, self.count - 1)
        for b in np.unique(bucket).tolist():
            with open(self.folder / f"{b}.bin", "ab") as f:
                found[bucket == b].tofile(f)

    def write_sorted(self, out_path: Path) -> int:
        total = 0
        writer = None
        try:
            for b in range(self.count):
                path = self.folder / f"{b}.bin"
                if not path.exists():
                    continue
                found = np.fromfile(path, dtype=RESULT)
                path.unlink()
                found = found[np.lexsort((found["row"], found["file"]))]
                table = pa.table({"file_index": pa.array(found["file"]), "row": pa.array(found["row"]),
                                  "hash": hash_column(found["h1"], found["h2"]), "origin": pa.array(found["origin"]),
                                  "ref": pa.array(found["ref"]), "pos": pa.array(found["pos"])}, schema=SOURCES_SCHEMA)
                writer = writer or pq.ParquetWriter(out_path, SOURCES_SCHEMA, compression="zstd")
                writer.write_table(table, row_group_size=GROUP_ROWS)
                total += len(found)
        finally:
            if writer is not None:
                writer.close()
        return total
