"""--reuse: earlier outputs whose values a new job copies for the inputs they already hold.

A source is usable only when it computed exactly what the new job would: the same model (by
content hash), task, dtype, backend, dimension, instruction, length buckets and output dtype.
Anything else is refused before a byte is written, naming every field that differs with both
values. Its committed data files' `input_hash` columns are read once, at planning (one tail read
per file, a few files at a time), into the plan's content index; a source that cannot be read
(a file gone, not Parquet, no hash column) is refused the same way. What the plan copies from a
source is then read by the shards themselves, so workers on other hosts need only reach it.
"""

from collections.abc import Callable
from dataclasses import dataclass

import pyarrow as pa

from common.errors import ConfigError
from common.io.content import HASH_BYTES, ContentIndex, hash_bytes
from common.io.manifest import load_manifest
from common.io.output import HASH_COLUMN
from common.io.plans import Plan, PlanTables, load_plan
from common.io.store import OutputStore
from common.jobstate import bounded_map, read_ids
from common.schemas import JobSpec

# What must be equal for a value computed by one job to be the value another would compute
IDENTITY = ("model", "task", "dtype", "backend", "dim", "instruction", "seqlens", "output_dtype")


class ReuseRefused(ConfigError):
    """A --reuse source that is not the same computation, or cannot be read: nothing is written."""


@dataclass
class ReuseSource:
    url: str
    store: OutputStore
    plan: Plan


def open_sources(spec: JobSpec, output_url: str) -> list[ReuseSource]:
    """Each --reuse source's plan, checked against the new job (headers only: a few reads each)."""
    sources = []
    for url in spec.reuse:
        store = OutputStore(url)
        if store.url.rstrip("/") == output_url.rstrip("/"):
            raise ReuseRefused(f"--reuse {url}: that is this job's own --out")
        try:
            plan = load_plan(store)
        except (ConfigError, OSError) as exc:
            raise ReuseRefused(f"--reuse {url}: not a job's output ({exc})") from exc
        differ = differences(plan.spec, spec)
        if differ:
            raise ReuseRefused(f"--reuse {url}: its job computed other values, so none can be reused: "
                               f"{'; '.join(differ)}")
        sources.append(ReuseSource(url, store, plan))
    return sources


def differences(old: JobSpec, new: JobSpec) -> list[str]:
    """Every identity field that differs, as `field OLD (this job: NEW)`."""
    out = []
    for name in IDENTITY:
        a, b = getattr(old, name), getattr(new, name)
        if name == "model":
            if a.identity != b.identity:
                out.append(f"model {a.source} [{a.identity[:12]}] (this job: {b.source} [{b.identity[:12]}])")
        elif a != b:
            out.append(f"{name} {_shown(a)} (this job: {_shown(b)})")
    return out


def _shown(value) -> str:
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return "(none)" if value is None else repr(value) if isinstance(value, str) else str(value)


def add_sources(sources: list[ReuseSource], content: ContentIndex, tables: PlanTables,
                note: Callable[[str], None] = lambda text: None) -> int:
    """Every committed data file of every source: its hashes into the index, its place into the
    plan's reuse file table. Returns the rows the sources hold."""
    held, file_no = 0, 0
    for origin, source in enumerate(sources):
        manifest = load_manifest(source.store, source.plan.shards_total)
        # a generator: a source of 5e5 shards never becomes a list of them
        committed = (s for s in source.plan.iter_shards() if manifest.committed[s.ordinal])
        note(f"planning: reading the input hashes of --reuse {source.url} ({manifest.shards_committed:,} committed "
             f"shards of {source.plan.shards_total:,})")
        if not manifest.shards_committed:
            raise ReuseRefused(f"--reuse {source.url}: job {source.plan.job_id} has no committed shard yet")
        reads = bounded_map(lambda s: (s, read_hashes(source, s.shard_id)), committed, source.store.read_concurrency)
        for shard, (key, size, digests) in reads:
            tables.reuse_files.add(source=origin, url=source.store.url, key=key, size=size)
            content.add_source(origin, file_no, digests)
            held += len(digests) // HASH_BYTES
            file_no += 1
    return held


def read_hashes(source: ReuseSource, shard_id: str) -> tuple[str, int, bytes]:
    """(data file key, its size, its rows' hashes) of one committed shard of a source."""
    store = source.store
    record = store.load_commit(shard_id)
    key = store.data_key(shard_id)
    where = store.location(key)
    if record is None:
        raise ReuseRefused(f"--reuse {source.url}: shard {shard_id} is committed in its manifest but has no commit "
                           "record: not a usable source")
    try:
        column = read_ids(store, key, HASH_COLUMN)
    except (pa.ArrowException, OSError, KeyError, ValueError) as exc:
        if HASH_COLUMN in str(exc):
            raise ReuseRefused(f"--reuse {source.url}: {where} has no {HASH_COLUMN} column (written by an earlier "
                               "version): it cannot be reused") from exc
        raise ReuseRefused(f"--reuse {source.url}: {where} is not a readable data file ({exc})") from exc
    if column is None:
        raise ReuseRefused(f"--reuse {source.url}: {where} is gone, though shard {shard_id} is committed")
    if column.type != pa.binary(HASH_BYTES) or len(column) != record.rows_out or column.null_count:
        raise ReuseRefused(f"--reuse {source.url}: {where} holds {len(column):,} {HASH_COLUMN} values of type "
                           f"{column.type}, its commit record {record.rows_out:,} rows: not a usable source")
    return key, record.data_bytes, hash_bytes(column)
