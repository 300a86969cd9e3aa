"""Finding ids that occur more than once, in memory that does not grow with the corpus."""

import shutil
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

DUPLICATE_SCHEMA = pa.schema([("file_index", pa.int32()), ("row", pa.int64()), ("id", pa.string()),
                              ("first_file_index", pa.int32()), ("first_row", pa.int64())])


class DuplicateFinder:
    """Finds ids that occur more than once, in bounded memory.

    Ids are spilled to hash partitions on disk while the corpus streams by; each partition is
    then small enough to check in memory. The first occurrence (file order, then row order)
    stays; every later one is listed, and becomes a reject naming the first.
    """

    def __init__(self, total_bytes: int):
        # ~256 MB of input per partition keeps each partition's id set to a few million ids.
        self.partitions = max(1, min(1024, total_bytes // (256 << 20) + 1))
        self.dir = Path(tempfile.mkdtemp(prefix="q3b-ids-"))
        self.buffers = [[] for _ in range(self.partitions)]
        self.writers = [None] * self.partitions
        self.buffered = 0
        self.all_int = True
        self.any_id = False

    @property
    def id_type(self) -> str:
        return "int64" if (self.all_int and self.any_id) else "string"

    def add(self, file_index: int, rows: list[int], ids: list) -> None:
        for row, value in zip(rows, ids):
            if value is None:
                continue
            self.any_id = True
            self.all_int = self.all_int and isinstance(value, int)
            key = str(value)
            self.buffers[hash(key) % self.partitions].append((key, file_index, row))
        self.buffered += len(ids)
        if self.buffered >= 1_000_000:
            self._flush()

    def _flush(self) -> None:
        for p, buf in enumerate(self.buffers):
            if not buf:
                continue
            keys, files, rows = zip(*buf)
            table = pa.table({"id": pa.array(keys, pa.string()), "file_index": pa.array(files, pa.int32()),
                              "row": pa.array(rows, pa.int64())})
            if self.writers[p] is None:
                self.writers[p] = pa.ipc.new_stream(self.dir / f"{p}.arrow", table.schema)
            self.writers[p].write_table(table)
            self.buffers[p] = []
        self.buffered = 0

    def finish(self, out_path: Path | None = None) -> int:
        self._flush()
        for w in self.writers:
            if w is not None:
                w.close()
        found = []
        for p in range(self.partitions):
            path = self.dir / f"{p}.arrow"
            if path.exists():
                found.extend(self._duplicates_in(path))
        if found and out_path is not None:
            found.sort(key=lambda r: (r[0], r[1]))
            out_path.parent.mkdir(parents=True, exist_ok=True)
            columns = list(zip(*found))
            pq.write_table(pa.Table.from_arrays([pa.array(c, t.type) for c, t in zip(columns, DUPLICATE_SCHEMA)],
                                                schema=DUPLICATE_SCHEMA), out_path)
        return len(found)

    @staticmethod
    def _duplicates_in(path: Path) -> list[tuple]:
        with pa.ipc.open_stream(path) as reader:
            table = reader.read_all()
        first: dict[str, tuple[int, int]] = {}
        dups = []
        keys, files, rows = (table.column(c).to_pylist() for c in ("id", "file_index", "row"))
        # Spill order is corpus order (files in order, rows in order), so the first seen is first.
        for key, f, r in zip(keys, files, rows):
            seen = first.get(key)
            if seen is None:
                first[key] = (f, r)
            else:
                dups.append((f, r, key, seen[0], seen[1]))
        return dups

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)




def load_duplicates(path: Path, file_index: int, row_start: int, row_end: int) -> dict[int, str]:
    """{row index: reason} for the later occurrences of duplicate ids inside one shard."""
    if not path.exists():
        return {}
    table = pq.read_table(path, filters=[("file_index", "=", file_index),
                                                          ("row", ">=", row_start), ("row", "<", row_end)])
    return {r: f"duplicate_id: {i!r} first seen in input file #{ff} row {fr}"
            for r, i, ff, fr in zip(*(table.column(c).to_pylist() for c in ("row", "id", "first_file_index", "first_row")))}

