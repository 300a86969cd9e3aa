"""Reading corpora: jsonl and Parquet, one file, a folder or a glob.

Planning streams each file once (`scan_*`): row counts, shard boundaries (byte offsets for
jsonl) and ids, in bounded memory. A shard then reads only its own row range (`read_rows`).
Every row comes back either as values or as a reject reason: a bad row never kills a shard.
"""

import glob
import hashlib
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from common import defaults
from common.errors import PermanentShardError, Qwen3BatchError
from common.io import fs
from common.io.content import HASH_BYTES, content_hash, hash_arrays, runnable
from common.schemas import InputFile, ShardSpec

FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".parquet": "parquet", ".pq": "parquet"}
BOM = b"\xef\xbb\xbf"


# Sequential reads of a jsonl file from a bucket: blocks of this size, one ranged request each.
READ_AHEAD = {"block_size": 8 << 20}


class InputError(Qwen3BatchError):
    """A whole input file is unusable; raised before anything is enqueued."""


@dataclass
class Row:
    row: int  # jsonl: 1-based line number; parquet: 0-based row index (as reported in rejects)
    index: int = -1  # 0-based row index within the file (jsonl: among non-blank lines)
    id: object = None
    values: tuple | None = None  # the text (embed) or (query, document) (rerank)
    reject: str | None = None  # reason code: detail
    kept: tuple = ()  # the --keep-columns values, copied into the output
    hash: bytes = b""  # content hash of values (common/io/content.py), set before the row is run


# --- finding inputs ---------------------------------------------------------------------------
def discover_inputs(source: str) -> list[tuple[str, str]]:
    """A file, a folder (its jsonl/parquet files, recursively) or a glob, on disk or in a bucket
    (s3://bucket/corpus/, s3://bucket/corpus/*.parquet); (url, format) pairs, sorted, so the plan
    and its shard ids are deterministic."""
    candidates = _object_candidates(source) if fs.is_object_url(source) else _local_candidates(source)
    if not candidates:
        raise InputError(f"input {source}: no such file, or no .jsonl/.parquet files in it")
    out = []
    for url in candidates:
        suffix = Path(url).suffix.lower()
        fmt = FORMATS.get(suffix)
        if fmt is None:
            raise InputError(f"input {url}: unknown format {suffix!r}; use .jsonl, .ndjson, .json (lines) or .parquet")
        out.append((url, fmt))
    return out


def _is_data(relative_parts: list[str], suffix: str) -> bool:
    """Like Spark and pyarrow datasets: names starting with "_" or "." are not data, and a folder's
    .json files are more often configs than json-lines corpora."""
    return suffix in FORMATS and suffix != ".json" and not any(p.startswith(("_", ".")) for p in relative_parts)


def _local_candidates(source: str) -> list[str]:
    path = Path(source).expanduser()
    if path.is_dir():
        found = [p for p in path.rglob("*") if p.is_file() and _is_data(list(p.relative_to(path).parts), p.suffix.lower())]
    elif path.is_file():
        found = [path]
    else:
        found = [Path(p) for p in glob.glob(source, recursive=True) if Path(p).is_file()]
    return sorted(str(p.resolve()) for p in found)


def _object_candidates(source: str) -> list[str]:
    filesystem, path = fs.fs_and_path(source)
    kind = fs.scheme(fs.normalize(source))
    if any(ch in path for ch in "*?["):
        found = [p for p in filesystem.glob(path) if filesystem.isfile(p)]
    elif filesystem.isfile(path):
        found = [path]
    else:
        found = [p for p in filesystem.find(path) if _is_data(p[len(path):].strip("/").split("/"), Path(p).suffix.lower())]
    return sorted(fs.to_url(p, kind) for p in found)


def sample_sha256(path: str, size: int) -> str:
    """Hash of the head and tail bytes plus the size: a cheap identity for fingerprints."""
    path = str(path)
    h = hashlib.sha256(str(size).encode())
    n = defaults.SAMPLE_HASH_BYTES
    with fs.open_url(path, "rb") as f:
        h.update(f.read(n))
        if size > n:
            f.seek(max(n, size - n))
            h.update(f.read(n))
    return h.hexdigest()


def shard_id(file_index: int, row_start: int) -> str:
    return f"{file_index:08d}-{row_start:012d}"


# --- planning scans -----------------------------------------------------------------------------
@dataclass
class ScanResult:
    input: InputFile
    shard_count: int
    shards: list[ShardSpec]  # empty when they went to on_shard


def scan_file(path: str, fmt: str, file_index: int, columns: tuple[str, ...], id_column: str,
              shard_rows: int, ids, keep_columns: tuple[str, ...] = (), on_shard=None, content=None) -> ScanResult:
    """Count rows, cut shards and stream ids to `ids` (a common.io.duplicates.DuplicateFinder, or
    anything with its `add` and `add_array`), and with `content` (a common.io.content.ContentIndex)
    the runnable rows' content hashes, in one pass; an
    InputError when the text columns (or the --keep-columns) are missing from the file. From a
    bucket: jsonl is read through once, a block of ranged reads at a time (bounded memory);
    Parquet gives its row counts from its footer, and only the id column is read. Each shard goes
    to `on_shard` as it is cut (or into the result's list, for small uses)."""
    kept: list[ShardSpec] = []
    on_shard = on_shard or kept.append
    path = str(path)
    size = fs.size(path)
    footer = ""
    if fmt == "jsonl":
        sample = ColumnSample(path, columns, keep_columns)
        rows, shards = _scan_jsonl(path, file_index, columns, id_column, shard_rows, ids.add, sample, on_shard,
                                   content)
        sample.check()
    else:
        rows, shards = _scan_parquet(path, file_index, columns, id_column, shard_rows, ids, keep_columns,
                                     on_shard, content)
        footer = hashlib.sha256(read_footer(path, size)[0]).hexdigest()
    info = InputFile(path=path, format=fmt, size=size, mtime_ns=fs.mtime_ns(path),
                     sample_sha256=sample_sha256(path, size), rows=rows, footer_sha256=footer)
    return ScanResult(info, shards, kept)


class ColumnSample:
    """The first rows of a jsonl file, counted for the columns a job needs: a file where most rows
    lack the text column is a wrong --text-column, not a corpus of rejects, and is refused before
    anything is enqueued (a job that would reject every row must fail loudly)."""

    def __init__(self, path: str, columns: tuple[str, ...], keep_columns: tuple[str, ...]):
        self.path, self.columns, self.keep = path, columns, keep_columns
        self.rows, self.missing, self.kept, self.first_keys = 0, dict.fromkeys(columns, 0), dict.fromkeys(keep_columns, 0), None

    @property
    def full(self) -> bool:
        return self.rows >= defaults.COLUMN_SAMPLE_ROWS

    def add(self, obj) -> None:
        self.rows += 1
        if not isinstance(obj, dict):
            return
        if self.first_keys is None:
            self.first_keys = sorted(obj)[:12]
        for name in self.columns:
            self.missing[name] += name not in obj
        for name in self.keep:
            self.kept[name] += name in obj

    def check(self) -> None:
        seen = f"the first row's fields are {self.first_keys}" if self.first_keys is not None else "no row is an object"
        for name, missing in self.missing.items():
            if self.rows and missing / self.rows > defaults.MISSING_COLUMN_FRACTION:
                option = {"text": "--text-column", "query": "--query-column", "document": "--document-column"}.get(
                    name, "--text-column / --query-column / --document-column")
                raise InputError(f"input {self.path}: {missing:,} of the first {self.rows:,} rows have no {name!r} field "
                                 f"({seen}); pass the right {option}")
        for name, present in self.kept.items():
            if self.rows and not present:
                raise InputError(f"input {self.path}: none of the first {self.rows:,} rows has the field {name!r} "
                                 f"named in --keep-columns ({seen})")


def _scan_jsonl(path: str, file_index: int, columns: tuple[str, ...], id_column: str, shard_rows: int, on_ids,
                sample: ColumnSample, on_shard, content=None):
    """One pass over the file; each shard's byte range is hashed on the way (the bytes are read
    anyway), so a worker can tell that the file changed under the plan as it reads the shard."""
    shards, rows, offset, lines = 0, 0, 0, 0
    start_row, start_offset, start_line = 0, 0, 0
    ids, id_rows = [], []
    want_ids = id_column != defaults.ROW_NUMBER_ID
    hashes = ContentBatch(content, file_index)
    digest = hashlib.sha256()

    def cut(end_row: int, end_offset: int) -> ShardSpec:
        return ShardSpec(shard_id=shard_id(file_index, start_row), file_index=file_index, row_start=start_row,
                         row_end=end_row, byte_offset=start_offset, line_start=start_line, byte_end=end_offset,
                         sha256=digest.hexdigest())

    with fs.open_url(path, "rb", **READ_AHEAD) as f:
        for raw in f:
            line_offset, offset = offset, offset + len(raw)
            lines += 1
            line = raw[len(BOM):] if rows == 0 and raw.startswith(BOM) else raw
            if line.strip() and rows and rows % shard_rows == 0:
                on_shard(cut(rows, line_offset))
                shards += 1
                start_row, start_offset, start_line = rows, line_offset, lines - 1
                digest = hashlib.sha256()
            digest.update(raw)
            if not line.strip():
                continue
            if want_ids or not sample.full or content is not None:
                obj = _jsonl_object(line)
                if not sample.full:
                    sample.add(obj)
            if want_ids:
                ids.append(normalize_id(obj.get(id_column)) if isinstance(obj, dict) else None)
                id_rows.append(rows)
                if len(ids) >= defaults.READ_BATCH_ROWS:
                    on_ids(file_index, id_rows, ids)
                    ids, id_rows = [], []
            if content is not None and isinstance(obj, dict):
                hashes.add_object(rows, obj, columns, id_column)
            rows += 1
    if ids:
        on_ids(file_index, id_rows, ids)
    hashes.flush()
    if rows > start_row:
        on_shard(cut(rows, offset))
        shards += 1
    return rows, shards


class ContentBatch:
    """The content hashes of a jsonl file's runnable rows, handed to a ContentIndex a batch at a time."""

    def __init__(self, content, file_index: int):
        self.content, self.file_index = content, file_index
        self.rows: list[int] = []
        self.digests = bytearray()

    def add_object(self, index: int, obj: dict, columns: tuple[str, ...], id_column: str) -> None:
        row = check_values(Row(index, id=_row_id(obj.get(id_column), id_column, index)),
                           [obj.get(c, _MISSING) for c in columns], columns)
        if row.reject is None:  # the rows a shard will run: the same check, so a copy's source is runnable
            self.rows.append(index)
            self.digests += content_hash(row.values)
            if len(self.rows) >= defaults.READ_BATCH_ROWS * 8:
                self.flush()

    def flush(self) -> None:
        if self.rows:
            self.content.add(self.file_index, np.asarray(self.rows, dtype=np.int64), bytes(self.digests))
            self.rows, self.digests = [], bytearray()


def add_parquet_hashes(content, file_index: int, first_row: int, columns: list, ids) -> None:
    """A Parquet batch's runnable rows' content hashes, from the Arrow buffers."""
    columns = [c.combine_chunks() if isinstance(c, pa.ChunkedArray) else c for c in columns]
    columns = [c.cast(c.type.value_type) if pa.types.is_dictionary(c.type) else c for c in columns]
    if isinstance(ids, pa.ChunkedArray):
        ids = ids.combine_chunks()
    valid = runnable(columns, ids)
    if valid.any():
        digests = np.frombuffer(hash_arrays(columns, valid), dtype=f"V{HASH_BYTES}")[valid]
        content.add(file_index, np.flatnonzero(valid).astype(np.int64) + first_row, digests.tobytes())


def _jsonl_object(line: bytes):
    """The parsed line, or None when it is not JSON (its row becomes a reject when its shard runs)."""
    if len(line) > defaults.MAX_JSONL_LINE_BYTES:
        return None
    try:
        return json.loads(line)
    except (ValueError, RecursionError):
        return None


def _scan_parquet(path: str, file_index: int, columns: tuple[str, ...], id_column: str, shard_rows: int, ids,
                  keep_columns: tuple[str, ...], on_shard, content=None):
    pf = open_parquet(path, pre_buffer=False)
    check_parquet_schema(path, pf.schema_arrow, columns, id_column, keep_columns)
    rows = pf.metadata.num_rows
    with_ids = id_column != defaults.ROW_NUMBER_ID
    wanted = ([id_column] if with_ids else []) + (list(columns) if content is not None else [])
    if wanted:
        done = 0
        for batch in pf.iter_batches(batch_size=defaults.READ_BATCH_ROWS * 8, columns=list(dict.fromkeys(wanted))):
            id_array = batch.column(id_column) if with_ids else None
            if with_ids:
                ids.add_array(file_index, done, id_array)  # as Arrow arrays: no Python object per id
            if content is not None:
                add_parquet_hashes(content, file_index, done, [batch.column(c) for c in columns], id_array)
            done += batch.num_rows
    count = 0
    for start, end in row_group_ranges([pf.metadata.row_group(g).num_rows for g in range(pf.metadata.num_row_groups)],
                                       shard_rows):
        on_shard(ShardSpec(shard_id=shard_id(file_index, start), file_index=file_index, row_start=start, row_end=end))
        count += 1
    return rows, count


def row_group_ranges(group_rows: list[int], shard_rows: int) -> Iterator[tuple[int, int]]:
    """Shard row ranges aligned to a Parquet file's row groups: whole groups gathered up to
    `shard_rows`, a larger group cut into pieces of `shard_rows`. No shard then reads a group it
    uses only the edge of (a 10-row shard straddling two 1M-row groups read both). A generator: a
    file of 1e6 shards is never a list of them."""
    start, first = 0, 0
    for n in group_rows:
        end_of_group = first + n
        if n > shard_rows:  # close what is gathered, then cut this group
            if start < first:
                yield start, first
            for s in range(first, end_of_group, shard_rows):
                yield s, min(s + shard_rows, end_of_group)
            start = end_of_group
        elif end_of_group - start > shard_rows:
            yield start, first
            start = first
        first = end_of_group
    if start < first:
        yield start, first


def open_parquet(path: str, pre_buffer: bool = True) -> pq.ParquetFile:
    """A Parquet file on disk or in a bucket (ranged reads: the footer first, then what is asked for).
    pre_buffer=False for a pass over the whole file: Arrow keeps every pre-buffered range until the
    file is closed (measured: 1.3 MB more per 65,536-row batch of an id and a text column)."""
    path = str(path)
    try:
        return pq.ParquetFile(fs.open_url(path, "rb") if fs.is_object_url(path) else path, pre_buffer=pre_buffer)
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"input {path}: not a readable Parquet file ({exc})") from exc


def check_parquet_schema(path: str, schema: pa.Schema, columns: tuple[str, ...], id_column: str,
                         keep_columns: tuple[str, ...] = ()) -> None:
    for name in columns:
        if name not in schema.names:
            raise InputError(f"input {path}: no column {name!r}; columns are {schema.names} (see --text-column)")
        t = schema.field(name).type
        if not (pa.types.is_string(t) or pa.types.is_large_string(t)):
            raise InputError(f"input {path}: column {name!r} has type {t}, expected string")
    if id_column != defaults.ROW_NUMBER_ID and id_column not in schema.names:
        raise InputError(f"input {path}: no id column {id_column!r}; pass --id-column NAME, or "
                         f"--id-column {defaults.ROW_NUMBER_ID} to number rows")
    missing = [name for name in keep_columns if name not in schema.names]
    if missing:
        raise InputError(f"input {path}: no column {', '.join(map(repr, missing))} (--keep-columns); columns are "
                         f"{schema.names}")


def open_planned_parquet(info: InputFile) -> pq.ParquetFile:
    """A planned Parquet input, its footer read once (one read of its tail) and checked against the
    plan's digest of it: the footer names every column chunk's offset and size, so a rewritten file
    is refused before a row is read. The file is then opened with that footer, so reading its rows
    costs no second footer read and, in a bucket, no size lookup."""
    try:
        footer, end = read_footer(info.path, info.size)
    except OSError as exc:
        raise InputChangedError(f"input_changed: {info.path} cannot be read any more ({exc})") from exc
    if info.footer_sha256 and hashlib.sha256(footer).hexdigest() != info.footer_sha256:
        raise _changed(info.path, "its Parquet footer (row groups, offsets, statistics)")
    metadata = pq.read_metadata(io.BytesIO(b"PAR1" + footer + end))
    source = fs.open_url(info.path, "rb", size=info.size, **READ_AHEAD) if fs.is_object_url(info.path) else info.path
    return pq.ParquetFile(source, metadata=metadata)


def keep_column_types(info: InputFile, keep_columns: tuple[str, ...]) -> dict[str, pa.DataType]:
    """The output types of the --keep-columns for one input: Parquet's own, strings for jsonl."""
    if not keep_columns:
        return {}
    if info.format == "jsonl":
        return dict.fromkeys(keep_columns, pa.string())
    schema = open_parquet(info.path).schema_arrow
    return {name: schema.field(name).type for name in keep_columns}


def normalize_id(value):
    """int and str ids are kept; anything else (null, float, bool, nested) counts as missing."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value:
        return value
    return None


# --- checking that an input is still the one planned ------------------------------------------------
class InputChangedError(InputError, PermanentShardError):
    """An input file's bytes differ from what the plan recorded: its shards cannot be run."""


def _changed(path: str, what: str) -> InputChangedError:
    return InputChangedError(f"input_changed: {path} {what} differ from the plan; the file was rewritten after the "
                             "job was submitted. Restore it, or submit the new file to another --out")


FOOTER_READ_BYTES = 64 << 10  # a Parquet file's tail read at once: its footer, for most files


def read_footer(path: str, size: int) -> tuple[bytes, bytes]:
    """(a Parquet file's footer, its last 8 bytes), in one read of its tail for most files."""
    start = max(0, size - FOOTER_READ_BYTES)
    tail = _read_range(path, start, size)
    if len(tail) < 8 or tail[-4:] != b"PAR1":
        raise InputChangedError(f"input_changed: {path} does not end as a Parquet file of {size:,} bytes does")
    length = int.from_bytes(tail[-8:-4], "little")
    if length + 8 > len(tail):
        if length + 8 > size:
            raise InputChangedError(f"input_changed: {path} has a footer longer than the file")
        tail = _read_range(path, size - length - 8, size)
    return tail[-8 - length:-8], tail[-8:]


def _read_range(path: str, start: int, end: int) -> bytes:
    """Bytes [start, end) of a file on disk or in a bucket, in one read (no size lookup first)."""
    if fs.is_object_url(path):
        filesystem, key = fs.fs_and_path(path)
        return filesystem.cat_file(key, start=start, end=end)
    with open(path, "rb") as f:
        f.seek(start)
        return f.read(end - start)


# --- reading a shard ----------------------------------------------------------------------------
def read_rows(info: InputFile, shard: ShardSpec, columns: tuple[str, ...], id_column: str,
              keep_columns: tuple[str, ...] = ()) -> Iterator[Row]:
    """The shard's rows in input order, each with its values or a reject reason. The input is
    checked as it is read, at no extra read: a jsonl shard's bytes hash to the planned digest, a
    Parquet file's footer to the planned one; InputChangedError otherwise (before the last row is
    out for jsonl, so a changed file's rows are never committed).

    keep_columns: fields copied into the output (jsonl: strings, other JSON values as their JSON text).
    """
    read = _read_jsonl if info.format == "jsonl" else _read_parquet
    for index, row in enumerate(read(info, shard, columns, id_column, keep_columns), start=shard.row_start):
        row.index = index
        if id_column == defaults.ROW_NUMBER_ID and row.id is not None:
            row.id += info.row_base
        yield row


def _read_jsonl(info: InputFile, shard: ShardSpec, columns, id_column, keep_columns=()) -> Iterator[Row]:
    wanted, seen, rows = shard.rows, 0, []
    line_no = shard.line_start
    digest = hashlib.sha256()
    with fs.open_url(info.path, "rb", **READ_AHEAD) as f:
        for line in _lines_between(f, shard.byte_offset, shard.byte_end, digest):
            line_no += 1
            if shard.byte_offset == 0 and line_no == 1 and line.startswith(BOM):
                line = line[len(BOM):]
            if not line.strip():
                continue
            if seen == wanted:
                raise _changed(info.path, f"bytes {shard.byte_offset}..{shard.byte_end} (shard {shard.shard_id})")
            row = parse_jsonl_line(line, line_no, columns, id_column, row_index=shard.row_start + seen,
                                   keep_columns=keep_columns)
            seen += 1
            if seen < wanted:
                yield row
            else:
                rows.append(row)  # the last row waits for the digest of the whole range
    if seen < wanted or (shard.sha256 and digest.hexdigest() != shard.sha256):
        raise _changed(info.path, f"bytes {shard.byte_offset}..{shard.byte_end} (shard {shard.shard_id}, "
                                  f"{wanted} rows planned, {seen} found)")
    yield from rows


def _lines_between(f, start: int, end: int, digest) -> Iterator[bytes]:
    """The lines of bytes [start, end) (which begin and end at line starts), hashed on the way."""
    f.seek(start)
    left, pending = end - start, b""
    while left > 0:
        block = f.read(min(left, 1 << 20))
        if not block:
            break
        left -= len(block)
        digest.update(block)
        lines = (pending + block).split(b"\n")
        pending = lines.pop()
        for line in lines:
            yield line + b"\n"
    if pending:
        yield pending


def parse_jsonl_line(line: bytes, line_no: int, columns, id_column, row_index: int, keep_columns=()) -> Row:
    if len(line) > defaults.MAX_JSONL_LINE_BYTES:
        return Row(line_no, reject=f"line_too_long: {len(line)} bytes > {defaults.MAX_JSONL_LINE_BYTES}")
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Row(line_no, reject=f"invalid_utf8: byte {exc.start}")
    try:
        obj = json.loads(text, object_pairs_hook=_reject_duplicate_keys)
    except _DuplicateKey as exc:
        return Row(line_no, reject=f"duplicate_key: {exc.args[0]!r}")
    except RecursionError:
        return Row(line_no, reject="malformed_json: nested too deeply")
    except ValueError as exc:
        return Row(line_no, reject=f"malformed_json: {exc}")
    if not isinstance(obj, dict):
        return Row(line_no, reject=f"not_an_object: a JSON {type(obj).__name__}, expected an object")
    row = check_values(Row(line_no, id=_row_id(obj.get(id_column), id_column, row_index)),
                       [obj.get(c, _MISSING) for c in columns], columns)
    if keep_columns and row.reject is None:
        row.kept = tuple(_as_text(obj.get(name)) for name in keep_columns)
    return row


def _as_text(value) -> str | None:
    """A kept jsonl value as a string column: text as it is (lone surrogates replaced: Parquet needs
    valid UTF-8), anything else as its JSON text, null as null."""
    if value is None:
        return None
    if isinstance(value, str):
        return value if _encodable(value) else value.encode("utf-8", "replace").decode("utf-8")
    return json.dumps(value, ensure_ascii=False)


def _read_parquet(info: InputFile, shard: ShardSpec, columns, id_column, keep_columns=()) -> Iterator[Row]:
    pf = open_planned_parquet(info)
    wanted = list(dict.fromkeys([*columns, *keep_columns, *([] if id_column == defaults.ROW_NUMBER_ID
                                                           else [id_column])]))
    first, groups = 0, []
    for g in range(pf.metadata.num_row_groups):
        n = pf.metadata.row_group(g).num_rows
        if first < shard.row_end and first + n > shard.row_start:
            groups.append(g)
        first += n
    row = sum(pf.metadata.row_group(g).num_rows for g in range(groups[0])) if groups else 0
    for batch in pf.iter_batches(batch_size=defaults.READ_BATCH_ROWS, row_groups=groups, columns=wanted):
        data = {name: batch.column(name).to_pylist() for name in wanted}
        for i in range(batch.num_rows):
            r = row + i
            if shard.row_start <= r < shard.row_end:
                raw_id = data[id_column][i] if id_column in data else None
                row_out = check_values(Row(r, id=_row_id(raw_id, id_column, r)), [data[c][i] for c in columns], columns)
                if keep_columns and row_out.reject is None:
                    row_out.kept = tuple(data[name][i] for name in keep_columns)
                yield row_out
        row += batch.num_rows
        if row >= shard.row_end:
            return


_MISSING = object()


def check_values(row: Row, values: list, columns) -> Row:
    for name, value in zip(columns, values):
        if value is _MISSING:
            row.reject = f"missing_text: no {name!r} field"
        elif value is None:
            row.reject = f"null_text: {name!r} is null"
        elif not isinstance(value, str):
            row.reject = f"non_string_text: {name!r} is a {type(value).__name__}"
        elif not value.strip():
            row.reject = f"empty_text: {name!r} is empty"
        elif not _encodable(value):
            row.reject = f"invalid_unicode: {name!r} holds a lone surrogate"
        if row.reject:
            return row
    if row.id is None:
        row.reject = "missing_id: the id is missing, null or not an int/string"
        return row
    row.values = tuple(values)
    return row


def _row_id(raw, id_column: str, row_index: int):
    return row_index if id_column == defaults.ROW_NUMBER_ID else normalize_id(raw)


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


class _DuplicateKey(ValueError):
    pass


def _reject_duplicate_keys(pairs):
    keys = set()
    for k, _ in pairs:
        if k in keys:
            raise _DuplicateKey(k)
        keys.add(k)
    return dict(pairs)
