"""Corpus -> job fingerprint + deterministic shards + duplicate ids. Pure: no broker here.

The plan is computed by streaming every input once, in bounded memory, and written atomically
to the output store before anything is enqueued. Ids seen earlier in the corpus are found with
a hash-partitioned spill to disk, so memory does not grow with the corpus either.
"""

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path

from common.io import corpus
from common.io.duplicates import DuplicateFinder
from common.io.store import OutputStore
from common.keys import shard_queue
from common.errors import ConfigError
from common.schemas import JOB_NAME, SEMANTICS_VERSION, JobSpec, Plan

CODE_VERSION = "0.1.0"


def fingerprint(spec: JobSpec, inputs: list[tuple[Path, str]]) -> str:
    """Identity of a job: its inputs (path, size, mtime, sampled bytes), model, options and the
    semantics version. Computed before scanning, so a resubmission costs no scan at all."""
    h = hashlib.sha256()
    h.update(spec.model_dump_json().encode())
    h.update(f"semantics={SEMANTICS_VERSION}".encode())
    for path, fmt in inputs:
        st = path.stat()
        h.update(json.dumps([str(path), fmt, st.st_size, st.st_mtime_ns,
                             corpus.sample_sha256(path, st.st_size)]).encode())
    return h.hexdigest()


def job_id_for(fp: str, name: str | None) -> str:
    return name or f"job-{fp[:12]}"


def plan_job(source: str, spec: JobSpec, store: OutputStore, name: str | None = None,
             on_file: Callable[[int, int, Path], None] | None = None) -> tuple[Plan, bool]:
    """(the plan owning this output, whether it was made now). Raises JobConflictError when the
    output belongs to a different job."""
    if name is not None and not JOB_NAME.match(name):
        raise ConfigError(f"job name {name!r} must match {JOB_NAME.pattern} (letters, digits, '.', '_', '-')")
    inputs = corpus.discover_inputs(source)
    fp = fingerprint(spec, inputs)
    if store.plan_path.exists():
        return store.save_plan(_stub_plan(store, fp)), False
    files, shards = [], []
    finder = DuplicateFinder(total_bytes=sum(p.stat().st_size for p, _ in inputs))
    try:
        for index, (path, fmt) in enumerate(inputs):
            if on_file:
                on_file(index, len(inputs), path)
            result = corpus.scan_file(path, fmt, index, spec.input_columns, spec.id_column, spec.shard_rows,
                                      finder.add)
            files.append(result.input)
            shards.extend(result.shards)
        duplicates = finder.finish(store.duplicates_path)
    finally:
        finder.close()
    plan = Plan(
        job_id=job_id_for(fp, name), fingerprint=fp, spec=spec, inputs=tuple(files), shards=tuple(shards),
        rows_total=sum(f.rows for f in files), id_type=finder.id_type, duplicate_ids=duplicates,
        queue=shard_queue(spec.task, spec.model.tag, spec.dtype, spec.backend),
        created_at=time.time(), code_version=CODE_VERSION)
    return store.save_plan(plan), True


def _stub_plan(store: OutputStore, fp: str) -> Plan:
    """Only the fingerprint matters when an output already holds a plan: compare, never merge."""
    existing = store.load_plan()
    return existing.model_copy(update={"fingerprint": fp})
