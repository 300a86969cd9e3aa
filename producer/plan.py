"""Corpus -> job fingerprint + deterministic shards + duplicate ids + copies. No broker here.

The plan is computed by streaming every input once, in bounded memory, and written to the output
store before anything is enqueued (the store's files are its only side effect): its shards and
inputs go into tables a row group at a time as the scan finds them (common/io/plans.py); ids seen
earlier in the corpus, and inputs seen earlier or held by a --reuse source (common/io/content.py),
are found with hash-partitioned spills to disk. Memory does not grow with the corpus; the shards'
first rows are kept as 8 bytes a shard (4 MB at 5e5 shards), for the copies to name their shard.
"""

import hashlib
import json
import time
from array import array
from collections.abc import Callable
from pathlib import Path

import numpy as np

from common.errors import ConfigError
from common.io import corpus, fs
from common.io.content import ContentIndex
from common.io.duplicates import DuplicateFinder
from common.io.plans import Plan, PlanTables, keep_schema_text, load_plan, save_header
from common.io.store import JobConflictError, OutputStore
from common.keys import shard_queue
from common.schemas import JOB_NAME, SEMANTICS_VERSION, JobSpec, PlanHeader
from producer import reuse

CODE_VERSION = "0.1.0"
EXPECTED_ROW_BYTES = 200  # a guess of a corpus's bytes per row, for the content index's partition count


def input_identity(url: str, fmt: str) -> tuple[str, str, int, str]:
    """What identifies an input: its path (or URL), format, size and a hash of its head and tail
    bytes. Not its mtime: a file rewritten with the same bytes (a demo's corpus) is the same input."""
    size = fs.size(url)
    return url, fmt, size, corpus.sample_sha256(url, size)


def fingerprint(spec: JobSpec, inputs: list[tuple[str, str, int, str]], reused: tuple[str, ...] = ()) -> str:
    """Identity of a job: its inputs' identities, model, options, the semantics version and the
    jobs of its --reuse sources. Computed before scanning, so a resubmission costs no scan at all."""
    h = hashlib.sha256()
    h.update(spec.model_dump_json().encode())
    h.update(f"semantics={SEMANTICS_VERSION}".encode())
    for identity in inputs:
        h.update(json.dumps(list(identity)).encode())
    for reused_fingerprint in reused:
        h.update(f"reuse={reused_fingerprint}".encode())
    return h.hexdigest()


def job_id_for(fp: str, output: str, name: str | None) -> str:
    """--name, or an id of this job AT this output: the same options into two outputs are two jobs."""
    return name or f"job-{hashlib.sha256(f'{fp}:{output}'.encode()).hexdigest()[:12]}"


def plan_job(source: str, spec: JobSpec, store: OutputStore, name: str | None = None,
             on_file: Callable[[int, int, Path], None] | None = None,
             on_note: Callable[[str], None] | None = None) -> tuple[Plan, bool]:
    """(the plan owning this output, whether it was made now). Raises JobConflictError, naming what
    changed, when the output belongs to a different job."""
    if name is not None and not JOB_NAME.match(name):
        raise ConfigError(f"--name {name!r} must match {JOB_NAME.pattern} (letters, digits, '.', '_', '-')")
    inputs = corpus.discover_inputs(source)
    identities = [input_identity(path, fmt) for path, fmt in inputs]
    if store.has_plan():  # resumed as planned: its --reuse sources need not even exist any more
        existing = load_plan(store)
        if existing.fingerprint != fingerprint(spec, identities, existing.header.reuse_fingerprints):
            raise JobConflictError(f"{store.url} already holds job {existing.job_id}, a different job: "
                                   f"{'; '.join(differences(existing, spec, identities))}. Use another --out, or "
                                   "delete that output to start over")
        return existing, False
    sources = reuse.open_sources(spec, store.url)
    fp = fingerprint(spec, identities, tuple(s.plan.fingerprint for s in sources))
    tables = PlanTables()
    corpus_bytes = sum(size for _, _, size, _ in identities)
    finder = DuplicateFinder(total_bytes=corpus_bytes)
    content = ContentIndex(corpus_bytes // EXPECTED_ROW_BYTES + sum(s.plan.rows_total for s in sources),
                           dedup=spec.dedup) if spec.dedup or sources else None
    rows_total, kept = 0, KeptTypes(spec.keep_columns)
    row_bases, shard_starts = [], array("q")

    def add_shard(shard) -> None:
        tables.add_shard(shard)
        shard_starts.append(rows_total + shard.row_start)

    try:
        if sources:
            reuse.add_sources(sources, content, tables, lambda text: on_note(text) if on_note else None)
        for index, (path, fmt) in enumerate(inputs):
            if on_file:
                on_file(index, len(inputs), path)
            result = corpus.scan_file(path, fmt, index, spec.input_columns, spec.id_column, spec.shard_rows,
                                      finder, keep_columns=spec.keep_columns, on_shard=add_shard, content=content)
            info = result.input.model_copy(update={"row_base": rows_total})
            tables.add_input(info)
            kept.add(info)
            row_bases.append(rows_total)
            rows_total += info.rows
        duplicates = finder.finish(tables.duplicates_path)
        if content is not None:
            content.finish(tables.sources_path, np.asarray(row_bases, dtype=np.int64),
                           np.frombuffer(shard_starts, dtype=np.int64), rows_total)
        folder, sizes = tables.store(store, fp)
    finally:
        finder.close()
        tables.close()
        if content is not None:
            content.close()
    header = PlanHeader(
        job_id=job_id_for(fp, store.url, name), fingerprint=fp, spec=spec, rows_total=rows_total,
        shards_total=len(shard_starts), files_total=len(inputs), id_type=finder.id_type, duplicate_ids=duplicates,
        copies=content.copies if content else 0, reusable=content.reusable if content else 0,
        reuse_fingerprints=tuple(s.plan.fingerprint for s in sources),
        queue=shard_queue(spec.task, spec.model.identity, spec.dtype, spec.backend), tables=folder,
        tables_bytes=sizes, keep_schema=keep_schema_text(kept.types), created_at=time.time(),
        code_version=CODE_VERSION)
    return save_header(store, header), True


class KeptTypes:
    """Every part file of a job has one schema: a kept column must have one type in every input."""

    def __init__(self, keep_columns: tuple[str, ...]):
        self.keep_columns = keep_columns
        self.types: dict = {}
        self.first: dict[str, str] = {}

    def add(self, info) -> None:
        for name, kind in corpus.keep_column_types(info, self.keep_columns).items():
            if name not in self.types:
                self.types[name], self.first[name] = kind, info.path
            elif self.types[name] != kind:
                raise ConfigError(f"--keep-columns {name}: it is {self.types[name]} in {self.first[name]} but {kind} in "
                                  f"{info.path} (jsonl values are kept as strings); the output needs one type")


def differences(existing: Plan, spec: JobSpec, identities: list[tuple[str, str, int, str]]) -> list[str]:
    """What differs between the job in an output and the one submitted now, as the user wrote it."""
    out = []
    old, new = existing.spec.model_dump(), spec.model_dump()
    if old["model"]["identity"] != new["model"]["identity"]:
        out.append(f"--model {old['model']['source']} -> {new['model']['source']} (another checkpoint)")
    for name in sorted(set(old) | set(new)):
        if name != "model" and old.get(name) != new.get(name):
            out.append(f"--{name.replace('_', '-')} {_shown(old.get(name))} -> {_shown(new.get(name))}")
    planned = {f.path: f for f in existing.iter_inputs()}
    given = {path: (size, sample) for path, _, size, sample in identities}
    for path in sorted(set(planned) | set(given)):
        if path not in given:
            out.append(f"input {path} is no longer among the inputs")
        elif path not in planned:
            out.append(f"input {path} is new")
        elif (planned[path].size, planned[path].sample_sha256) != given[path]:
            out.append(f"input {path} changed ({planned[path].size:,} -> {given[path][0]:,} bytes, or its content)")
    return out or ["the semantics version or the fingerprint rules changed (an older version planned it)"]


def _shown(value) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value)) or "(none)"
    return "(none)" if value is None else str(value)

