"""A job's plan in its output store: a small header and three tables beside it.

    _plan.json                       the header (common/schemas.PlanHeader): a few hundred bytes
    _plan/<fingerprint>/shards.parquet       one row per shard, in ordinal order
    _plan/<fingerprint>/inputs.parquet       one row per input file
    _plan/<fingerprint>/duplicate_ids.parquet  rows whose id was seen earlier in the corpus
    _plan/<fingerprint>/sources.parquet        rows that copy a value instead of computing it (common/io/content.py)
    _plan/<fingerprint>/reuse_files.parquet    the --reuse sources' data files those rows copy from

No process parses the whole plan. A worker reads the header once per job, then the row group
(GROUP_ROWS shards, a few hundred KB at most) that holds the shard a message names; a follower
reads the header alone. The tables are written first, into a folder named by the job's
fingerprint (two jobs racing for one output never write into each other's), and the header is
created after them, only if absent: its creation is the plan's commit, as a commit record is a
shard's. Memory in every process stays bounded whatever the number of shards and files.
"""

import base64
import tempfile
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from common.errors import ConfigError
from common.io.store import PLAN, JobConflictError, OutputStore
from common.schemas import InputFile, PlanHeader, ShardSpec

TABLES = "_plan"
SHARDS, INPUTS, DUPLICATES = "shards.parquet", "inputs.parquet", "duplicate_ids.parquet"
SOURCES, REUSE_FILES = "sources.parquet", "reuse_files.parquet"
GROUP_ROWS = 4096  # rows per row group of the shard and input tables: what one lookup reads
CACHED_GROUPS = 4  # row groups a Plan keeps per table, as Arrow tables (a worker's shards come from near the cursor)

SHARD_SCHEMA = pa.schema([("shard_id", pa.string()), ("file_index", pa.int32()), ("row_start", pa.int64()),
                          ("row_end", pa.int64()), ("byte_offset", pa.int64()), ("line_start", pa.int64()),
                          ("byte_end", pa.int64()), ("sha256", pa.string())])
REUSE_FILE_SCHEMA = pa.schema([("source", pa.int16()), ("url", pa.string()), ("key", pa.string()),
                               ("size", pa.int64())])
INPUT_SCHEMA = pa.schema([("path", pa.string()), ("format", pa.string()), ("size", pa.int64()),
                          ("mtime_ns", pa.int64()), ("sample_sha256", pa.string()), ("rows", pa.int64()),
                          ("row_base", pa.int64()), ("footer_sha256", pa.string())])


class OldPlanError(ConfigError):
    """An output planned by an earlier version (one JSON document holding every shard)."""


class TableWriter:
    """Rows appended one at a time and written GROUP_ROWS at a time into a local Parquet file, so a
    plan of a million shards never sits in memory as objects."""

    def __init__(self, path: Path, schema: pa.Schema):
        self.path, self.schema = path, schema
        self.columns: dict[str, list] = {name: [] for name in schema.names}
        self.writer = pq.ParquetWriter(path, schema, compression="zstd")
        self.rows = 0

    def add(self, **row) -> None:
        for name, values in self.columns.items():
            values.append(row[name])
        self.rows += 1
        if len(self.columns[self.schema.names[0]]) == GROUP_ROWS:
            self.flush()

    def flush(self) -> None:
        if self.columns[self.schema.names[0]]:
            self.writer.write_table(pa.table(self.columns, schema=self.schema), row_group_size=GROUP_ROWS)
            self.columns = {name: [] for name in self.schema.names}

    def close(self) -> int:
        self.flush()
        self.writer.close()
        return self.rows


class PlanTables:
    """The planner's side: the tables of one plan, written under a temporary folder and stored by
    `store_tables`, which returns their folder under the output."""

    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="q3b-plan-"))
        self.shards = TableWriter(self.dir / SHARDS, SHARD_SCHEMA)
        self.inputs = TableWriter(self.dir / INPUTS, INPUT_SCHEMA)
        self.reuse_files = TableWriter(self.dir / REUSE_FILES, REUSE_FILE_SCHEMA)

    def add_input(self, info: InputFile) -> None:
        self.inputs.add(**info.model_dump())

    def add_shard(self, shard: ShardSpec) -> None:
        self.shards.add(**shard.model_dump(exclude={"ordinal"}))

    @property
    def duplicates_path(self) -> Path:
        return self.dir / DUPLICATES

    @property
    def sources_path(self) -> Path:
        return self.dir / SOURCES

    def store(self, store: OutputStore, fingerprint: str) -> tuple[str, dict[str, int]]:
        """Upload the tables to `_plan/<fingerprint>/`; (that folder, each table's size in bytes)."""
        self.shards.close()
        self.inputs.close()
        if not self.reuse_files.close():
            (self.dir / REUSE_FILES).unlink()
        folder = f"{TABLES}/{fingerprint[:32]}"
        sizes = {}
        for name in (SHARDS, INPUTS, DUPLICATES, SOURCES, REUSE_FILES):
            local = self.dir / name
            if local.exists():
                store.put_file(f"{folder}/{name}", local)
                sizes[name] = local.stat().st_size
        return folder, sizes

    def close(self) -> None:
        import shutil

        shutil.rmtree(self.dir, ignore_errors=True)


def row_of(group: pa.Table, i: int) -> dict:
    """One row of a cached row group as Python values (the group stays columnar: a few hundred KB)."""
    return {name: column[i].as_py() for name, column in zip(group.column_names, group.columns)}


def keep_schema_text(types: dict[str, pa.DataType]) -> str:
    """The --keep-columns' types as the header stores them (an Arrow schema, base64)."""
    if not types:
        return ""
    return base64.b64encode(pa.schema(list(types.items())).serialize().to_pybytes()).decode()


def save_header(store: OutputStore, header: PlanHeader) -> "Plan":
    """Create `_plan.json` unless it exists; return the plan that owns this output (the same job
    submitted again gets its existing plan back; a different job is refused)."""
    if store.create_if_absent(PLAN, header.model_dump_json(indent=1).encode()):
        return Plan(header, store)
    existing = load_plan(store)
    if existing.fingerprint != header.fingerprint:
        raise JobConflictError(f"{store.url} already holds job {existing.job_id}, a different job: use another "
                               "--out, or delete that output to start over")
    return existing


def load_plan(store: OutputStore) -> "Plan":
    body = store.read_bytes(PLAN)
    if body is None:
        raise ConfigError(f"{store.url} holds no job (no {PLAN})")
    try:
        header = PlanHeader.model_validate_json(body)
    except ValueError as exc:
        if b'"shards"' in body[:1 << 20] and b'"format"' not in body[:4096]:
            raise OldPlanError(f"{store.url} was planned by an earlier version of qwen3-batch (its {PLAN} holds every "
                               "shard): finish it with that version, or submit it again to a new --out") from exc
        raise ConfigError(f"{store.location(PLAN)} is not a plan this version can read: {exc}") from exc
    return Plan(header, store)


class Plan:
    """A job's plan, read from its store on demand: the header's fields, and shards and inputs by
    their ordinal, a cached row group at a time."""

    def __init__(self, header: PlanHeader, store: OutputStore):
        self.header, self.store = header, store
        self._groups: dict[str, OrderedDict] = {name: OrderedDict() for name in (SHARDS, INPUTS, DUPLICATES, SOURCES,
                                                                                 REUSE_FILES)}
        self._footers: dict[str, pq.FileMetaData] = {}

    def __eq__(self, other) -> bool:
        return isinstance(other, Plan) and other.header == self.header

    def __hash__(self) -> int:
        return hash(self.header.fingerprint)

    def __repr__(self) -> str:
        return f"Plan({self.job_id!r}, {self.shards_total} shards, {self.files_total} files)"

    # --- the header ---------------------------------------------------------------------------------
    job_id = property(lambda self: self.header.job_id)
    fingerprint = property(lambda self: self.header.fingerprint)
    spec = property(lambda self: self.header.spec)
    rows_total = property(lambda self: self.header.rows_total)
    shards_total = property(lambda self: self.header.shards_total)
    files_total = property(lambda self: self.header.files_total)
    id_type = property(lambda self: self.header.id_type)
    duplicate_ids = property(lambda self: self.header.duplicate_ids)
    queue = property(lambda self: self.header.queue)
    created_at = property(lambda self: self.header.created_at)

    # --- shards and inputs ----------------------------------------------------------------------------
    def shard_at(self, ordinal: int) -> ShardSpec:
        """The shard at `ordinal`; KeyError when the plan has none there."""
        if not 0 <= ordinal < self.shards_total:
            raise KeyError(f"shard #{ordinal} is not in the plan of job {self.job_id} ({self.shards_total} shards)")
        return ShardSpec(ordinal=ordinal, **row_of(self._group(SHARDS, ordinal // GROUP_ROWS), ordinal % GROUP_ROWS))

    def shard(self, shard_id: str) -> ShardSpec:
        """The shard named `shard_id` (ids sort in ordinal order: a search over the row groups)."""
        low, high = 0, self.shards_total
        while low < high:  # the first ordinal whose id is >= shard_id
            mid = (low + high) // 2
            if self._shard_id(mid) < shard_id:
                low = mid + 1
            else:
                high = mid
        if low < self.shards_total and self._shard_id(low) == shard_id:
            return self.shard_at(low)
        raise KeyError(f"shard {shard_id} is not in the plan of job {self.job_id}")

    def _shard_id(self, ordinal: int) -> str:
        return self._group(SHARDS, ordinal // GROUP_ROWS).column("shard_id")[ordinal % GROUP_ROWS].as_py()

    def input(self, file_index: int) -> InputFile:
        if not 0 <= file_index < self.files_total:
            raise KeyError(f"input #{file_index} is not in the plan of job {self.job_id}")
        return InputFile(**row_of(self._group(INPUTS, file_index // GROUP_ROWS), file_index % GROUP_ROWS))

    def iter_shards(self, start: int = 0) -> Iterator[ShardSpec]:
        """Every shard from `start` on, a row group at a time (not cached: a streaming pass)."""
        for g in range(start // GROUP_ROWS, (self.shards_total + GROUP_ROWS - 1) // GROUP_ROWS):
            for i, row in enumerate(self._read_group(SHARDS, g).to_pylist()):
                ordinal = g * GROUP_ROWS + i
                if ordinal >= start:
                    yield ShardSpec(ordinal=ordinal, **row)

    def iter_inputs(self) -> Iterator[InputFile]:
        for g in range((self.files_total + GROUP_ROWS - 1) // GROUP_ROWS):
            for row in self._read_group(INPUTS, g).to_pylist():
                yield InputFile(**row)

    def duplicates_in(self, shard: ShardSpec) -> dict[int, str]:
        """{row index: reason} for the later occurrences of duplicate ids inside one shard: the row
        groups of the planner's table that can hold them (its statistics say which), read once and
        kept like the shard table's."""
        if not self.duplicate_ids:
            return {}
        found = {}
        for dup in self._rows_of(DUPLICATES, shard).to_pylist():
            found[dup["row"]] = (f"duplicate_id: {dup['id']!r} first seen in input file #{dup['first_file_index']} "
                                 f"row {dup['first_row']}")
        return found

    def sources_in(self, shard: ShardSpec) -> pa.Table:
        """The shard's rows that copy a value instead of computing it (common/io/content.py), as a
        table of file_index, row, hash, origin, ref and pos."""
        from common.io.content import SOURCES_SCHEMA

        if not (self.header.copies or self.header.reusable):
            return SOURCES_SCHEMA.empty_table()
        return self._rows_of(SOURCES, shard)

    def reuse_file(self, file_no: int) -> dict:
        """A --reuse source's data file, by its number in the plan: source, url, key, size."""
        return row_of(self._group(REUSE_FILES, file_no // GROUP_ROWS), file_no % GROUP_ROWS)

    def _rows_of(self, table: str, shard: ShardSpec) -> pa.Table:
        """A table's rows that fall in one shard: the row groups of the planner's table that can
        hold them (its statistics say which), read once and cached like the shard table's."""
        metadata = self._metadata(table)
        found = []
        for g in range(metadata.num_row_groups):
            stats = [metadata.row_group(g).column(i).statistics for i in (0, 1)]  # file_index, row
            if stats[0] is not None and not stats[0].min <= shard.file_index <= stats[0].max:
                continue
            if stats[0] is not None and stats[0].min == stats[0].max and stats[1] is not None and (
                    stats[1].max < shard.row_start or stats[1].min >= shard.row_end):
                continue
            group = self._group(table, g)
            rows = group.column("row")
            mask = pc.and_(pc.equal(group.column("file_index"), shard.file_index),
                           pc.and_(pc.greater_equal(rows, shard.row_start), pc.less(rows, shard.row_end)))
            found.append(group.filter(mask))
        return pa.concat_tables(found) if found else metadata.schema.to_arrow_schema().empty_table()

    def keep_column_types(self) -> dict[str, pa.DataType]:
        """The output types of the --keep-columns, one per column across every input (checked at planning)."""
        if not self.header.keep_schema:
            return {}
        schema = pa.ipc.read_schema(pa.py_buffer(base64.b64decode(self.header.keep_schema)))
        return {field.name: field.type for field in schema}

    # --- row groups -----------------------------------------------------------------------------------
    def _group(self, table: str, index: int) -> pa.Table:
        cache = self._groups[table]
        if index in cache:
            cache.move_to_end(index)
            return cache[index]
        group = cache[index] = self._read_group(table, index)
        if len(cache) > CACHED_GROUPS:
            cache.popitem(last=False)
        return group

    def _read_group(self, table: str, index: int) -> pa.Table:
        with self._open(table) as f:
            return pq.ParquetFile(f, metadata=self._metadata(table)).read_row_group(index)

    def _metadata(self, table: str) -> pq.FileMetaData:
        """A table's footer, read once per plan: every row group read after it is one ranged read."""
        if table not in self._footers:
            with self._open(table) as f:
                self._footers[table] = pq.ParquetFile(f).metadata
        return self._footers[table]

    def _open(self, table: str):
        return self.store.open_read(f"{self.header.tables}/{table}", size=self.header.tables_bytes.get(table))
