"""Parquet output: one schema per job, so every part file reads as one dataset."""

import hashlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from common.io.content import HASH_TYPE

METADATA_PREFIX = "qwen3batch."  # Parquet key-value metadata: qwen3batch.model, qwen3batch.task, ...
HASH_COLUMN = "input_hash"  # BLAKE2b-128 of the row's input (common/io/content.py): what --reuse matches on
BUILT_COLUMNS = 5  # id, embedding or score, n_tokens, truncated, input_hash; the --keep-columns follow

REJECT_SCHEMA = pa.schema([
    ("file", pa.string()),
    ("row", pa.int64()),  # jsonl: 1-based line number; parquet: 0-based row index
    ("id", pa.string()),  # as text, since a rejected id may be of any type
    ("reason", pa.string()),  # code, then ": " and the detail
])


def id_type(name: str) -> pa.DataType:
    return pa.int64() if name == "int64" else pa.string()


def result_schema(task: str, id_type_name: str, dim: int, output_dtype: str,
                  kept: dict[str, pa.DataType] | None = None, metadata: dict[str, str] | None = None) -> pa.Schema:
    """id, embedding (FixedSizeList, read as FLOAT[] by DuckDB) or score, n_tokens, truncated,
    input_hash, then the --keep-columns; `metadata` becomes the file's key-value metadata (what made it)."""
    fields = [("id", id_type(id_type_name))]
    if task == "embed":
        value = pa.float16() if output_dtype == "float16" else pa.float32()
        fields.append(("embedding", pa.list_(value, dim)))
    else:
        fields.append(("score", pa.float32()))
    fields += [("n_tokens", pa.int32()), ("truncated", pa.bool_()), (HASH_COLUMN, HASH_TYPE), *(kept or {}).items()]
    return pa.schema(fields, metadata={f"{METADATA_PREFIX}{k}": v for k, v in (metadata or {}).items()})


def result_table(schema: pa.Schema, ids: list, values: np.ndarray, n_tokens: np.ndarray,
                 truncated: np.ndarray, hashes: bytes, kept: list[tuple] = ()) -> pa.Table:
    if "embedding" in schema.names:
        value_type = schema.field("embedding").type
        dim = value_type.list_size
        flat = pa.array(values.reshape(-1).astype(np.float16 if value_type.value_type == pa.float16() else np.float32))
        column = pa.FixedSizeListArray.from_arrays(flat, dim) if len(ids) else pa.array([], type=value_type)
    else:
        column = pa.array(values.astype(np.float32), type=pa.float32())
    ids_array = pa.array(ids, type=schema.field("id").type)
    kept_names = schema.names[BUILT_COLUMNS:]
    kept_arrays = [pa.array([row[i] for row in kept] if kept else [], type=schema.field(name).type)
                   for i, name in enumerate(kept_names)]
    hash_array = pa.FixedSizeBinaryArray.from_buffers(HASH_TYPE, len(ids), [None, pa.py_buffer(hashes)])
    return pa.Table.from_arrays([ids_array, column, pa.array(n_tokens, pa.int32()), pa.array(truncated, pa.bool_()),
                                 hash_array, *kept_arrays], schema=schema)


def reject_table(file: str, rows: list[int], ids: list, reasons: list[str]) -> pa.Table:
    return pa.Table.from_arrays(
        [pa.array([file] * len(rows), pa.string()), pa.array(rows, pa.int64()),
         pa.array([None if i is None else str(i) for i in ids], pa.string()), pa.array(reasons, pa.string())],
        schema=REJECT_SCHEMA)


def write_parquet(table: pa.Table, path: Path) -> str:
    """Write and return the file's sha256 (recorded in the commit, checked on verify)."""
    # Dictionary encoding is wasted on unique floats: off, it writes 3-4x faster and smaller.
    pq.write_table(table, path, compression="zstd", use_dictionary=False)
    return sha256_file(path)


class ParquetChunkWriter:
    """A shard's data file written one row group per engine chunk, as the chunks come (from the
    pipeline's writing thread); `sha256` once closed. A shard with no good rows still gets a file,
    with the schema and no rows."""

    def __init__(self, schema: pa.Schema, path: Path):
        self.schema, self.path = schema, Path(path)
        self.writer: pq.ParquetWriter | None = None
        self.sha256: str | None = None

    def __enter__(self) -> "ParquetChunkWriter":
        return self

    def write(self, rows: list, values: np.ndarray, n_tokens: np.ndarray, truncated: np.ndarray) -> None:
        table = result_table(self.schema, [r.id for r in rows], values, n_tokens, truncated,
                             b"".join(r.hash for r in rows), [r.kept for r in rows])
        self.open().write_table(table)

    def open(self) -> pq.ParquetWriter:
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.path, self.schema, compression="zstd", use_dictionary=False)
        return self.writer

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.open()
        if self.writer is not None:
            self.writer.close()
        if exc_type is None:
            self.sha256 = sha256_file(self.path)


def sha256_file(path: Path) -> str:
    with open(path, "rb") as f:
        return sha256_stream(f)


def sha256_stream(f) -> str:
    h = hashlib.sha256()
    for block in iter(lambda: f.read(1 << 20), b""):
        h.update(block)
    return h.hexdigest()
