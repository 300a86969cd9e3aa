"""run_shard: check input -> read -> validate -> batch -> engine -> write -> commit. No Celery here.

The same function serves the queued workers and the in-process --local mode, so both paths
produce the same bytes by construction. It only computes and commits: whether a shard should run
at all (already committed, quarantined, cancelled, attempts left) is decided by its caller
(workers/runner.py for a queued worker, producer/local.py for --local).
"""

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from common import defaults
from common.io import corpus, output
from common.io.duplicates import load_duplicates
from common.io.store import OutputStore
from common.schemas import SEMANTICS_VERSION, CommitRecord, Plan, ShardSpec
from common.templates import format_query
from workers.engines.base import Engine

log = logging.getLogger(__name__)

# Fault injection points, in order; see common/faults.py. A no-op unless a test turns it on.
FAULT_POINTS = ("before_compute", "after_compute", "after_write", "before_commit", "after_commit")


@dataclass
class ShardOutcome:
    status: str  # committed | lost_race
    record: CommitRecord | None = None


Progress = Callable[[int, int], None]  # (rows, tokens) just done, for the worker's heartbeat


def run_shard(store: OutputStore, plan: Plan, shard_id: str, engine: Engine, worker: str,
              fault: Callable[[str, str], None] = lambda point, shard_id: None,
              progress: Progress = lambda rows, tokens: None) -> ShardOutcome:
    started = time.perf_counter()
    shard = plan.shard(shard_id)
    info = plan.inputs[shard.file_index]
    corpus.check_input(info, shard)  # before a row is read: InputChangedError
    fault("before_compute", shard_id)
    good, rejects = read_shard(store, plan, shard)
    progress(len(rejects), 0)
    engine = engine.configured(plan.spec.seqlens)
    results = compute(engine, plan, good, rejects, progress)
    fault("after_compute", shard_id)
    attempt, attempt_dir = store.new_attempt_dir(shard_id)
    data_path, reject_path = store.data_path(shard_id), store.reject_path(shard_id)
    schema = output.result_schema(plan.spec.task, plan.id_type, results.dim, plan.spec.output_dtype,
                                  corpus.keep_column_types(info, plan.spec.keep_columns), file_metadata(plan, engine))
    digest = output.write_parquet(output.result_table(schema, results.ids, results.values, results.n_tokens,
                                                      results.truncated, results.kept),
                                  store.staged(shard_id, attempt, data_path))
    if rejects:
        rejects.sort(key=lambda r: r[0])
        info = plan.inputs[shard.file_index]
        output.write_parquet(output.reject_table(info.path, *map(list, zip(*rejects))),
                             store.staged(shard_id, attempt, reject_path))
    fault("after_write", shard_id)
    record = CommitRecord(
        shard_id=shard_id, attempt=attempt, rows_in=shard.rows, rows_out=len(results.ids),
        rows_rejected=len(rejects), tokens=int(results.n_tokens.sum()), data_file=store.relative(data_path),
        reject_file=store.relative(reject_path) if rejects else None, data_sha256=digest, worker=worker,
        seconds=round(time.perf_counter() - started, 3), committed_at=time.time())
    if record.rows_out + record.rows_rejected != record.rows_in:
        raise AssertionError(f"shard {shard_id}: {record.rows_out} + {record.rows_rejected} != {record.rows_in}")
    fault("before_commit", shard_id)
    won = store.commit(record, attempt_dir)
    fault("after_commit", shard_id)
    return ShardOutcome("committed" if won else "lost_race", record if won else store.load_commit(shard_id))


def read_shard(store: OutputStore, plan: Plan, shard: ShardSpec):
    """(rows to run, rejects as (row, id, reason) tuples) for one shard, in input order."""
    spec, info = plan.spec, plan.inputs[shard.file_index]
    duplicates = load_duplicates(store.duplicates_path, shard.file_index, shard.row_start, shard.row_end)
    base = plan.row_id_base(shard.file_index)
    good, rejects = [], []
    for row in corpus.read_rows(info, shard, spec.input_columns, spec.id_column, base, spec.keep_columns):
        reason = row.reject or duplicates.get(row.index)
        if reason:
            rejects.append((row.row, row.id, reason))
        else:
            good.append(row)
    if plan.id_type == "string":
        for row in good:
            row.id = str(row.id)
    return good, rejects


def file_metadata(plan: Plan, engine: Engine) -> dict[str, str]:
    """What made a data file, in its own Parquet metadata: a file found alone says so."""
    spec = plan.spec
    return {"job_id": plan.job_id, "model": spec.model.source, "model_identity": spec.model.identity,
            "task": spec.task, "instruction": spec.instruction or "", "dim": str(spec.dim or engine.info.hidden_size)
            if spec.task == "embed" else "", "dtype": spec.dtype, "backend": spec.backend,
            "output_dtype": spec.output_dtype, "semantics_version": str(SEMANTICS_VERSION),
            "random_weights": str(engine.info.random_weights).lower(),
            "simulated": str(spec.backend == "simulated").lower()}


@dataclass
class Results:
    ids: list
    values: np.ndarray
    n_tokens: np.ndarray
    truncated: np.ndarray
    dim: int
    kept: list = field(default_factory=list)  # per output row: the --keep-columns values


def compute(engine: Engine, plan: Plan, rows: list, rejects: list, progress: Progress = lambda r, t: None) -> Results:
    """Run the engine over the rows in chunks; rows the engine reports as errors join the rejects."""
    spec = plan.spec
    dim = engine.check_dim(spec.dim) if spec.task == "embed" else 0
    ids, values, n_tokens, truncated, kept = [], [], [], [], []
    for start in range(0, len(rows), defaults.ENGINE_CHUNK_ROWS):
        chunk = rows[start:start + defaults.ENGINE_CHUNK_ROWS]
        if spec.task == "embed":
            texts = [r.values[0] if spec.instruction is None else format_query(r.values[0], spec.instruction)
                     for r in chunk]
            out = engine.embed(texts, dim=dim, progress=progress)
            chunk_values = out.vectors
        else:
            out = engine.rerank([r.values[0] for r in chunk], [r.values[1] for r in chunk],
                                instruction=spec.instruction or defaults.DEFAULT_RERANK_INSTRUCTION, progress=progress)
            chunk_values = out.scores
        keep = np.array([e is None for e in out.errors], dtype=bool)
        for r, error in zip(chunk, out.errors):
            if error is not None:
                rejects.append((r.row, r.id, error))
        ids.extend(r.id for r, k in zip(chunk, keep) if k)
        kept.extend(r.kept for r, k in zip(chunk, keep) if k)
        values.append(chunk_values[keep])
        n_tokens.append(out.n_tokens[keep])
        truncated.append(out.truncated[keep])
    shape = (0, dim) if spec.task == "embed" else (0,)
    return Results(ids, np.concatenate(values) if values else np.zeros(shape, np.float32),
                   np.concatenate(n_tokens) if n_tokens else np.zeros(0, np.int32),
                   np.concatenate(truncated) if truncated else np.zeros(0, bool), dim, kept)

