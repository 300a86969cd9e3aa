"""run_shard: check input -> read -> validate -> tokenise -> engine -> write -> commit. No Celery here.

The same function serves the queued workers and the in-process --local mode, so both paths
produce the same bytes by construction. It only computes and commits: whether a shard should run
at all (already committed, quarantined, cancelled, attempts left) is decided by its caller
(workers/runner.py for a queued worker, producer/local.py for --local).

A shard runs as chunks of ENGINE_CHUNK_ROWS rows through a small pipeline, so the device is not
idle while the CPU reads or writes: one thread reads and tokenises the next chunk, and another
writes the previous chunk's results (a Parquet row group each), while the engine computes the
current one. Reading, tokenising (the fast tokenizer) and Parquet encoding release the GIL, and so
do the engine's kernels. At most one chunk waits on each side: memory stays bounded by three chunks.
"""

import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from common import defaults
from common.io import corpus, output
from common.io.content import content_hash
from common.io.plans import Plan
from common.io.store import OutputStore
from common.schemas import SEMANTICS_VERSION, CommitRecord, ShardSpec
from common.templates import format_query
from workers.copies import ShardCopies
from workers.engines.base import Engine

log = logging.getLogger(__name__)

# Fault injection points, in order; see common/faults.py. A no-op unless a test turns it on.
FAULT_POINTS = ("before_compute", "after_compute", "after_write", "before_commit", "after_commit")


@dataclass
class ShardOutcome:
    status: str  # committed | lost_race
    record: CommitRecord | None = None


Progress = Callable[[int, int], None]  # (rows, tokens) just done, for the worker's heartbeat


def run_shard(store: OutputStore, plan: Plan, shard: ShardSpec, engine: Engine, worker: str,
              fault: Callable[[str, str], None] = lambda point, shard_id: None,
              progress: Progress = lambda rows, tokens: None) -> ShardOutcome:
    started = time.perf_counter()
    shard_id = shard.shard_id
    info = plan.input(shard.file_index)
    fault("before_compute", shard_id)
    engine = engine.configured(plan.spec.seqlens)
    dim = engine.check_dim(plan.spec.dim) if plan.spec.task == "embed" else 0
    data_key, reject_key = store.data_key(shard_id), store.reject_key(shard_id)
    schema = output.result_schema(plan.spec.task, plan.id_type, dim, plan.spec.output_dtype,
                                  plan.keep_column_types(), file_metadata(plan, engine))
    rejects: list[tuple] = []
    copies = ShardCopies(store, plan, shard, "embedding" if plan.spec.task == "embed" else "score")
    copies.fetch()
    attempt = store.new_attempt(shard_id)
    try:
        with output.ParquetChunkWriter(schema, attempt.path(data_key)) as writer:
            totals = compute(engine, plan, read_chunks(plan, shard, rejects), dim, progress, writer.write, copies)
        progress(len(rejects), 0)  # rows rejected while reading count as done
        rejects += totals.failed
        fault("after_compute", shard_id)
        if rejects:
            rejects.sort(key=lambda r: r[0])
            output.write_parquet(output.reject_table(info.path, *map(list, zip(*rejects))), attempt.path(reject_key))
        fault("after_write", shard_id)
        record = CommitRecord(
            shard_id=shard_id, attempt=attempt.id, rows_in=shard.rows, rows_out=totals.rows,
            rows_rejected=len(rejects), tokens=totals.tokens, data_file=data_key,
            reject_file=reject_key if rejects else None, data_sha256=writer.sha256,
            data_bytes=attempt.path(data_key).stat().st_size, rows_deduplicated=totals.deduplicated,
            rows_reused=totals.reused, worker=worker,
            seconds=round(time.perf_counter() - started, 3), committed_at=time.time(),
            simulated=plan.spec.backend == "simulated", random_weights=engine.info.random_weights)
        if record.rows_out + record.rows_rejected != record.rows_in:
            raise AssertionError(f"shard {shard_id}: {record.rows_out} + {record.rows_rejected} != {record.rows_in}")
        fault("before_commit", shard_id)
    except BaseException:
        store.discard_attempt(attempt)  # this attempt's files only, before any commit: never another's
        raise
    won = store.commit(record, attempt)
    fault("after_commit", shard_id)
    return ShardOutcome("committed" if won else "lost_race", record if won else store.load_commit(shard_id))


def read_chunks(plan: Plan, shard: ShardSpec, rejects: list) -> Iterator[list]:
    """The shard's runnable rows in input order, ENGINE_CHUNK_ROWS at a time; rows rejected while
    reading (bad input, duplicate ids) are added to `rejects` as (row, id, reason)."""
    spec, info = plan.spec, plan.input(shard.file_index)
    duplicates = plan.duplicates_in(shard)
    chunk = []
    for row in corpus.read_rows(info, shard, spec.input_columns, spec.id_column, spec.keep_columns):
        reason = row.reject or duplicates.get(row.index)
        if reason:
            rejects.append((row.row, row.id, reason))
            continue
        if plan.id_type == "string":
            row.id = str(row.id)
        chunk.append(row)
        if len(chunk) == defaults.ENGINE_CHUNK_ROWS:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


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
class Totals:
    rows: int = 0  # written to the data file
    tokens: int = 0  # of the rows the engine computed (a copied row's tokens cost nothing)
    deduplicated: int = 0  # of rows: copied from a row of identical input in this job
    reused: int = 0  # of rows: copied from a --reuse source
    failed: list = field(default_factory=list)  # (row, id, reason) of rows the engine could not compute


@dataclass
class Prepared:
    rows: list  # corpus rows of the chunk
    run: list  # their indexes in `rows` that the engine runs
    tokenized: list  # what the engine runs, for those rows


def prepare(engine: Engine, plan: Plan, chunks: Iterator[list], copies: ShardCopies) -> Prepared | None:
    """The next chunk read, hashed and tokenised, or None at the end (runs on the reading thread).
    Rows whose value is copied are not tokenised."""
    rows = next(chunks, None)
    if rows is None:
        return None
    for row in rows:
        row.hash = content_hash(row.values)
    run = [i for i, row in enumerate(rows) if copies.known(row) is None and not copies.awaits_own(row)]
    return Prepared(rows, run, tokenize(engine, plan, [rows[i] for i in run]))


def tokenize(engine: Engine, plan: Plan, rows: list) -> list:
    spec = plan.spec
    if spec.task == "embed":
        texts = [r.values[0] if spec.instruction is None else format_query(r.values[0], spec.instruction)
                 for r in rows]
        return engine.tokenize_embed(texts)
    return engine.tokenize_rerank([r.values[0] for r in rows], [r.values[1] for r in rows],
                                  spec.instruction or defaults.DEFAULT_RERANK_INSTRUCTION)


def compute(engine: Engine, plan: Plan, chunks: Iterator[list], dim: int, progress: Progress,
            write: Callable, copies: ShardCopies) -> Totals:
    """Run every chunk through the engine, reading the next and writing the previous meanwhile.
    write(rows, values, n_tokens, truncated) gets each chunk's good rows, in order."""
    totals = Totals()
    with ThreadPoolExecutor(1, thread_name_prefix="q3b-read") as reader, \
            ThreadPoolExecutor(1, thread_name_prefix="q3b-write") as writer:
        ahead: Future = reader.submit(prepare, engine, plan, chunks, copies)
        behind: Future | None = None
        try:
            while (current := ahead.result()) is not None:
                ahead = reader.submit(prepare, engine, plan, chunks, copies)
                results = run_chunk(engine, plan, current, dim, progress, totals, copies)
                if behind is not None:
                    behind.result()  # one chunk in flight to the file at a time; its error, if any, here
                behind = writer.submit(write, *results)
            if behind is not None:
                behind.result()
        except BaseException:
            ahead.cancel()  # the pools then wait for at most the one read and the one write under way
            raise
    return totals


def run_chunk(engine: Engine, plan: Plan, prepared: Prepared, dim: int, progress: Progress, totals: Totals,
              copies: ShardCopies):
    """One chunk: its runnable rows through the engine, the others copied (a copy whose source
    did not come through is run after all). Returns (good rows, their values, token counts,
    truncation flags), in input order."""
    rows = prepared.rows
    results: dict[int, tuple] = {}  # index in rows -> (value, n_tokens, truncated), or an error string
    run_rows(engine, plan, prepared.run, prepared.tokenized, rows, dim, progress, results, copies)
    late, copied_rows = [], set()
    for i, row in enumerate(rows):
        if i in results:
            continue
        copied = copies.known(row) or copies.own_value(row)
        if copied is None:
            late.append(i)
            continue
        results[i] = (copied.value, copied.n_tokens, copied.truncated)
        copied_rows.add(i)
        totals.reused += copied.reused
        totals.deduplicated += not copied.reused
    if copied_rows:
        progress(len(copied_rows), 0)
    if late:  # their source was rejected or failed: computed here
        run_rows(engine, plan, late, tokenize(engine, plan, [rows[i] for i in late]), rows, dim, progress, results,
                 copies)
    good = [i for i in range(len(rows)) if not isinstance(results[i], str)]
    totals.failed += [(rows[i].row, rows[i].id, results[i]) for i in range(len(rows)) if isinstance(results[i], str)]
    totals.rows += len(good)
    n_tokens = np.array([results[i][1] for i in good], dtype=np.int32)
    totals.tokens += sum(results[i][1] for i in good if i not in copied_rows)
    values = np.stack([np.asarray(results[i][0]) for i in good]) if good else np.zeros(
        (0, dim) if plan.spec.task == "embed" else (0,), dtype=np.float32)
    return ([rows[i] for i in good], values, n_tokens, np.array([results[i][2] for i in good], dtype=bool))


def run_rows(engine: Engine, plan: Plan, indexes: list[int], tokenized: list, rows: list, dim: int,
             progress: Progress, results: dict, copies: ShardCopies) -> None:
    """Rows of a chunk through the engine, their results (or errors) into `results`."""
    if not indexes:
        return
    if plan.spec.task == "embed":
        out = engine.embed_tokenized(tokenized, dim=dim, progress=progress)
        values = out.vectors
    else:
        out = engine.rerank_tokenized(tokenized, progress=progress)
        values = out.scores
    for j, i in enumerate(indexes):
        if out.errors[j] is not None:
            results[i] = out.errors[j]
        else:
            results[i] = (values[j], int(out.n_tokens[j]), bool(out.truncated[j]))
            copies.remember(rows[i], values[j], out.n_tokens[j], out.truncated[j])
