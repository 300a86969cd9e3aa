"""The Python API (re-exported by the `qwen3batch` package); the producer CLI is a thin layer over it.

    import qwen3batch as q3b

    job = q3b.submit("corpus.parquet", model="/models/Qwen3-Embedding-0.6B", out="/shared/out/emb")
    job.wait()                      # a live bar; returns the final JobStatus
    job.status().rows_done
    table = job.read()              # pyarrow Table of OUT/data (job.dataset() for a lazy Dataset)
    job.cancel(); job.resume()

    vectors = q3b.embed(["a text", "another"], model="/models/Qwen3-Embedding-0.6B")   # numpy [n, dim]
    scores = q3b.rerank(["query"], ["document"], model="/models/Qwen3-Reranker-0.6B")  # numpy [n]

`submit(local=True)` runs the job in this process (no broker) and returns once it is done.
Everything is checked before anything is enqueued: the model (its config and tokenizer, not its
weights), the task against the checkpoint's kind, the options, the inputs' columns.
"""

import contextlib
import functools
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import redis

from common import defaults, heartbeats, options
from common.broker import BrokerError
from common.errors import Qwen3BatchError
from common.io import fs
from common.io.plans import Plan, load_plan
from common.io.store import OutputStore
from common.jobstate import JobState
from common.model_identity import model_ref
from common.schemas import JobSpec
from common.settings import Settings, load_settings
from producer import submit as broker
from producer.events import ShardEvents
from producer.plan import plan_job
from producer.progress import Reporter, Snapshot, reporter_for, summary_line

if TYPE_CHECKING:  # pyarrow.dataset (and the pandas it imports) costs every producer command 0.3 s
    import pyarrow.dataset as pads

class WaitTimeout(Qwen3BatchError):
    """`wait(timeout_s=...)`: no worker served the job's queue for that long. The job stays queued."""


@dataclass
class JobStatus:
    """A job's state, from its output folder (the durable truth) and, for refusals, from Redis."""

    job_id: str
    status: str  # queued | running | completed | completed_with_failures | cancelled
    output: str
    data: str
    rejects: str | None  # OUT/rejects, which exists once a row is rejected
    model: str
    task: str
    queue: str
    rows_total: int
    rows_done: int
    rows_out: int
    rows_rejected: int
    tokens: int
    shards_total: int
    shards_committed: int
    shards_quarantined: int
    shards_pending: int
    rows_computed: int = 0  # of rows_out: vectors (or scores) the model produced
    rows_deduplicated: int = 0  # of rows_out: copied from a row of identical input in this job
    rows_reused: int = 0  # of rows_out: copied from a --reuse source
    quarantined: dict[str, str] = field(default_factory=dict)  # shard -> reason (the first 100)
    changed_inputs: list[str] = field(default_factory=list)  # from the reasons of shards quarantined for it
    refusals: dict[str, str] = field(default_factory=dict)  # shard -> why a worker refused its message
    problems: list[str] = field(default_factory=list)  # what the end-of-job check found wrong: not marked done
    stalled: dict[str, str] = field(default_factory=dict)  # worker -> why it waits (its store full, read-only, down)

    @property
    def finished(self) -> bool:
        return self.status in ("completed", "completed_with_failures")

    @property
    def all_rejected(self) -> bool:
        """Every row of a finished job ended as a reject: a failure however the shards went."""
        return self.finished and self.rows_total > 0 and self.rows_out == 0

    def to_dict(self) -> dict:
        return dict(asdict(self), finished=self.finished, all_rejected=self.all_rejected)


def stalled_workers(workers: list[dict], job_id: str) -> dict[str, str]:
    """worker -> why it is waiting, for the live workers stuck on this job's store (their heartbeats)."""
    return {w["name"]: w["stalled"] for w in workers
            if w.get("stalled") and (w.get("current_job") == job_id or f"{job_id};" in w["stalled"])}


class Job:
    """A job in an output folder. Its truth is the folder; Redis (when reachable) adds what is
    queued, running or refused, and the workers' live progress."""

    def __init__(self, store: OutputStore, plan: Plan, settings: Settings | None = None,
                 client: redis.Redis | None = None):
        self.store, self.plan = store, plan
        self.settings = settings or load_settings()
        self._client = client

    def __repr__(self) -> str:
        return f"Job({self.job_id!r}, output={str(self.output)!r})"

    @property
    def job_id(self) -> str:
        return self.plan.job_id

    @property
    def output(self) -> str:
        """The output folder, or its bucket URL."""
        return self.store.url

    @property
    def client(self) -> redis.Redis | None:
        if self._client is None:
            with contextlib.suppress(BrokerError):
                self._client = broker.connect(self.settings)
        return self._client

    # --- reading -------------------------------------------------------------------------------------
    def state(self, known=None) -> JobState:
        """The store's manifest and marker, plus what Redis announced since the last fold."""
        return broker.state(self.client, self.store, self.plan, known)

    def status(self, state: JobState | None = None) -> JobStatus:
        """What the job's state says, in a few reads whatever its size (common/jobstate.py)."""
        state = state or self.state()
        refusals, stalled = {}, {}
        if self.client is not None:
            with contextlib.suppress(redis.RedisError):
                refusals = broker.refusals(self.client, self.plan)
                stalled = stalled_workers(broker.live_workers(self.client), self.job_id)
        spec, manifest = self.plan.spec, state.manifest
        reasons = dict(manifest.reasons)
        return JobStatus(
            job_id=self.job_id, status=state.status, output=self.output, data=self.store.location("data"),
            rejects=self.store.location("rejects") if state.rows_rejected else None,
            model=spec.model.source, task=spec.task, queue=self.plan.queue,
            rows_total=self.plan.rows_total, rows_done=state.rows_done, rows_out=state.rows_out,
            rows_rejected=state.rows_rejected, tokens=state.tokens, shards_total=self.plan.shards_total,
            rows_computed=state.rows_computed, rows_deduplicated=state.rows_deduplicated,
            rows_reused=state.rows_reused,
            shards_committed=state.shards_committed, shards_quarantined=state.shards_quarantined,
            shards_pending=self.plan.shards_total - state.shards_done, quarantined=reasons,
            changed_inputs=sorted({r.removeprefix("input_changed: ").split("; ", 1)[0]
                                   for r in reasons.values() if r.startswith("input_changed:")}),
            refusals=refusals, problems=list(manifest.problems), stalled=stalled)

    def dataset(self) -> "pads.Dataset":
        """OUT/data as a pyarrow Dataset (lazy: filter and project before reading); from a bucket too."""
        return fs.arrow_dataset(self.store.location("data"))

    def read(self, columns: list[str] | None = None) -> pa.Table:
        return self.dataset().to_table(columns=columns)

    def rejects(self) -> pa.Table:
        if not self.state().rows_rejected:
            from common.io.output import REJECT_SCHEMA
            return REJECT_SCHEMA.empty_table()
        return fs.arrow_dataset(self.store.location("rejects")).to_table()

    # --- acting ------------------------------------------------------------------------------------------
    def cancel(self) -> None:
        """Queued shards are skipped; committed output stays; `resume` continues."""
        broker.cancel(self.client, self.store, self.plan)

    def resume(self, retry_quarantined: bool = False, reporter: Reporter | None = None) -> int:
        """Publish what nothing runs, then the window (never doubling the queue); returns the messages sent."""
        client = self.require_client()
        self.store.set_cancelled(False)
        if retry_quarantined:
            broker.retry_quarantined(client, self.store, self.plan)
        return send(self.settings, client, self.store, self.plan, reporter or Reporter())

    def wait(self, progress: bool | Reporter = True, timeout_s: float | None = None) -> JobStatus:
        """Follow the job until every shard is committed or quarantined, or it is cancelled. It runs
        the reconciler for this job meanwhile (a job followed here completes even if every worker
        forgot it), shows refusals and, when no worker serves the queue, the live ones of this
        model. timeout_s: give up (WaitTimeout) once no worker has served the queue that long."""
        reporter = progress if isinstance(progress, Reporter) else reporter_for(None, bool(progress))
        return follow(self, reporter, timeout_s)

    def require_client(self) -> redis.Redis:
        if self.client is None:
            return broker.connect(self.settings)  # raises with what is wrong
        return self.client


def open_job(job: str | Path, settings: Settings | None = None) -> Job:
    """A job by its output folder, or by its id (registered in Redis at submit)."""
    settings = settings or load_settings()
    client = None
    with contextlib.suppress(BrokerError):
        client = broker.connect(settings)
    store = broker.find_output(client, str(job))
    return Job(store, load_plan(store), settings, client)


def submit(inputs: str | Path, *, model: str | Path, out: str | Path, task: str = "embed", local: bool = False,
           dtype: str = "auto", backend: str = defaults.DEFAULT_BACKEND, device: str = defaults.DEFAULT_DEVICE,
           seqlens: tuple[int, ...] = defaults.DEFAULT_SEQLENS, instruction: str | None = None, query: bool = False,
           dim: int | None = None, output_dtype: str = "float32", id_column: str = defaults.DEFAULT_ID_COLUMN,
           text_column: str = defaults.DEFAULT_TEXT_COLUMN, query_column: str = defaults.DEFAULT_QUERY_COLUMN,
           document_column: str = defaults.DEFAULT_DOCUMENT_COLUMN, keep_columns: tuple[str, ...] = (),
           shard_rows: int = defaults.DEFAULT_SHARD_ROWS, name: str | None = None, progress: bool | Reporter = True,
           settings: Settings | None = None, engine=None, dedup: bool = True,
           reuse: list[str | Path] | tuple = ()) -> Job:
    """Plan a job over `inputs` (a jsonl/Parquet file, a folder of them, or a glob) and enqueue its
    shards for the workers, or with local=True run it here and return when it is done. The same
    job submitted again resumes it; another job into the same `out` is refused, naming what differs.

    dtype "auto": queued, what the live workers of this model serve (fp32 if none is up yet);
    local, what fits `device` (fp32 on cpu, bf16 on cuda). engine: with local=True, an engine already
    loaded (workers.engines.registry.create_engine) to run the job on, e.g. across several jobs.
    dedup: rows of identical input get their value from one computation (False: each is computed).
    reuse: earlier outputs of the same model and options, whose values are copied for the inputs
    they hold (docs/dedup.md)."""
    settings = settings or load_settings()
    reporter = progress if isinstance(progress, Reporter) else reporter_for(None, bool(progress))
    store = OutputStore(settings.output_location(str(out)))
    client = None if local else broker.connect(settings)  # fail before the (long) planning scan
    spec = build_spec(model=str(model), task=task, dtype=dtype, backend=backend, device=device, seqlens=seqlens,
                      instruction=instruction, query=query, dim=dim, output_dtype=output_dtype, id_column=id_column,
                      text_column=text_column, query_column=query_column, document_column=document_column,
                      keep_columns=tuple(keep_columns), shard_rows=shard_rows, client=client, reporter=reporter,
                      dedup=dedup, reuse=tuple(settings.reuse_location(str(r)) for r in reuse))
    store.check_commits_supported()
    plan = make_plan(str(inputs), spec, store, name, reporter)
    job = Job(store, plan, settings, client)
    if local:
        run_here(job, device, reporter, engine)
    else:
        broker.check_workers_accept(client, plan, store.url)
        send(settings, client, store, plan, reporter)
    return job


def build_spec(*, model: str, task: str, dtype: str, backend: str, device: str, client: redis.Redis | None,
               reporter: Reporter, query: bool = False, dim: int | None = None, **fields) -> JobSpec:
    """A JobSpec, once everything that can be checked without the weights is: the model's config and
    tokenizer, the checkpoint's kind against the task, the options, the dimension against the hidden size."""
    from workers.engines.loading import inspect_model

    options.check_task(task)
    options.check_backend(backend)
    options.check_device(device)
    ref = model_ref(model)
    if backend == "simulated":
        hidden = None
    else:
        check = inspect_model(ref.source, task)
        hidden = check.hidden_size
        if check.warning:
            reporter.note(f"warning: {check.warning}")
    if dtype == "auto":
        dtype = auto_dtype(client, ref.identity, task, backend, device, reporter)
    if query and fields.get("instruction") is None and task == "embed":
        fields["instruction"] = defaults.DEFAULT_RETRIEVAL_INSTRUCTION
    spec = JobSpec(task=task, model=ref, backend=backend, dtype=dtype, dim=dim, **fields)
    options.check_dim(spec.dim, hidden)
    return spec


def auto_dtype(client: redis.Redis | None, identity: str, task: str, backend: str, device: str,
               reporter: Reporter) -> str:
    """--dtype auto: queued, the dtype the live workers of this model, task and backend serve; local
    (client None), the device's default. Several dtypes served at once: the user must choose."""
    if client is None:
        kind = device.split(":")[0]
        return defaults.COMPILE_DTYPES[backend][0] if backend in options.COMPILED_BACKENDS else \
            defaults.DEVICE_DTYPES.get(kind, "fp32")
    served = sorted({w.get("dtype") for w in heartbeats.live_workers(client)
                     if w.get("model_identity") == identity and w.get("task") == task and w.get("backend") == backend})
    if len(served) == 1:
        return served[0]
    if len(served) > 1:
        raise Qwen3BatchError(f"--dtype auto: the live workers of this model serve {', '.join(served)}; pass "
                              "--dtype to choose")
    chosen = defaults.COMPILE_DTYPES[backend][0] if backend in options.COMPILED_BACKENDS else defaults.DEVICE_DTYPES["cpu"]
    reporter.note(f"--dtype auto: no live worker serves this model yet; the job asks for {chosen} (what `workers "
                  f"start --dtype auto` runs on a CPU). Start its workers with --dtype {chosen}, or pass --dtype")
    return chosen


def make_plan(inputs: str, spec: JobSpec, store: OutputStore, name: str | None, reporter: Reporter) -> Plan:
    started = time.perf_counter()
    plan, new = plan_job(inputs, spec, store, name,
                         lambda i, n, path: reporter.note(f"planning: scanning input {i + 1}/{n} {path}"),
                         reporter.note)
    verb = "planned" if new else "resuming"
    copied = ""
    if plan.header.copies or plan.header.reusable:
        copied = (f", {plan.header.copies:,} rows repeat an earlier row's input and {plan.header.reusable:,} are held "
                  "by --reuse sources (copied, not computed)")
    reporter.note(f"{verb} job {plan.job_id}: {plan.rows_total:,} rows in {plan.files_total} files, "
                  f"{plan.shards_total} shards, {plan.duplicate_ids:,} duplicate ids{copied}, queue {plan.queue} "
                  f"({time.perf_counter() - started:.1f}s)")
    return plan


def send(settings: Settings, client: redis.Redis, store: OutputStore, plan: Plan, reporter: Reporter) -> int:
    """Publish what nothing runs and the job's first window; the workers publish the rest as they go."""
    if store.is_cancelled():
        reporter.note(f"job {plan.job_id} is cancelled: nothing is enqueued; `producer resume {store.url}` continues it")
        return 0
    sent = broker.enqueue(settings, client, store, plan)
    reporter.note(f"enqueued {sent} shards of {plan.shards_total} on {plan.queue}: the workers publish the rest as "
                  "they finish these (the others are done, queued or running)")
    return sent


def run_here(job: Job, device: str, reporter: Reporter, engine=None) -> JobStatus:
    from producer.local import LocalRun

    started = time.monotonic()
    run = LocalRun(job.store, job.plan, device, job.settings.max_attempts, engine)
    rows_before = run.state.rows_done
    reporter.start(job.job_id, job.plan.rows_total)
    window = [0, 0]  # rows and tokens of the shard in progress

    def show() -> None:
        state = run.state
        reporter.update(Snapshot(job.plan.rows_total, state.rows_done, state.rows_done + window[0],
                                 state.tokens + window[1], state.shards_quarantined,
                                 state.rows_deduplicated + state.rows_reused))

    def on_progress(rows: int, tokens: int) -> None:
        window[0] += rows
        window[1] += tokens
        show()

    def on_shard() -> None:
        window[0] = window[1] = 0
        show()

    show()
    try:
        run.run(on_shard, on_progress)
    finally:
        reporter.stop()
    status = conclude(job, run.state)
    reporter.note(summary_line(status, time.monotonic() - started, rows_before))
    return status


def follow(job: Job, reporter: Reporter, timeout_s: float | None) -> JobStatus:
    """Each second: the manifest (re-read once another process stored a newer one), what Redis
    announced since, and the rows of the shards in flight from the workers' heartbeats. Every
    interval, a reconciler pass for this job. Nothing here reads per-shard records."""
    client, plan, settings = job.client, job.plan, job.settings
    state = job.state()
    started, rows_before = time.monotonic(), state.rows_done
    served_at = started  # the last time a live worker served the queue (for timeout_s)
    reconciled_at, hinted_at, shown = started, started - 30 + 2 * settings.heartbeat_interval_s, set()
    reporter.start(job.job_id, plan.rows_total)
    events = ShardEvents(client, job.job_id)
    try:
        while True:
            state = job.state(known=state.manifest)
            workers = live(client)
            if any(w.get("queue") == plan.queue for w in workers):
                served_at = time.monotonic()
            in_flight = [w for w in workers if w.get("current_job") == plan.job_id
                         and str(w.get("current_ordinal", "")).isdigit() and not state.done(int(w["current_ordinal"]))]
            reporter.update(Snapshot(plan.rows_total, state.rows_done,
                                     state.rows_done + sum(int(w.get("current_rows", 0)) for w in in_flight),
                                     state.tokens + sum(int(w.get("current_tokens", 0)) for w in in_flight),
                                     state.shards_quarantined, state.rows_deduplicated + state.rows_reused))
            if state.finished or state.cancelled or state.manifest.problems:
                break
            now = time.monotonic()
            all_done = state.shards_done >= plan.shards_total  # the end-of-job check is next: run it now
            if client is not None and (all_done or now - reconciled_at > settings.reconcile_interval_s):
                reconciled_at = now
                with contextlib.suppress(redis.RedisError, BrokerError):
                    broker.reconcile(settings, client, job.store, plan)
                    for shard, reason in broker.refusals(client, plan).items():
                        if reason not in shown:
                            shown.add(reason)
                            reporter.note(f"a worker refused shard {shard}: {reason}")
            for worker, why in stalled_workers(workers, plan.job_id).items():
                if (worker, why.split(" (shard ")[0]) not in shown:
                    shown.add((worker, why.split(" (shard ")[0]))
                    reporter.note(f"worker {worker} waits for the store, and retries by itself: {why}")
            if client is not None and now - hinted_at > 30 and not any(w.get("queue") == plan.queue for w in workers):
                hinted_at = now
                reporter.note(no_worker_hint(plan, workers))
            if timeout_s is not None and now - served_at > timeout_s:
                raise WaitTimeout(f"no worker served queue {plan.queue} for {timeout_s:g} s: stopped waiting. The job "
                                  f"stays queued; re-attach with `producer wait {job.job_id}`")
            events.wait(plan.shards_total - state.shards_done, defaults.PROGRESS_REFRESH_S)
    except KeyboardInterrupt:
        reporter.stop()
        reporter.note(f"stopped following job {job.job_id}; it keeps running on the workers. Re-attach: producer "
                      f"wait {job.job_id}   cancel: producer cancel {job.job_id}")
        raise
    finally:
        events.close()
        reporter.stop()
    status = conclude(job, state)
    reporter.note(summary_line(status, time.monotonic() - started, rows_before))
    return status


def live(client: redis.Redis | None) -> list[dict]:
    if client is None:
        return []
    try:
        return heartbeats.live_workers(client)
    except redis.RedisError:
        return []


def no_worker_hint(plan: Plan, workers: list[dict]) -> str:
    """No live worker serves the job's queue: say how to start one, and what the live workers of
    this model serve (the usual mistake: fp32 workers, a bf16 job)."""
    spec = plan.spec
    text = (f"no live worker serves queue {plan.queue}. Start one: workers start --model {spec.model.source} "
            f"--task {spec.task} --dtype {spec.dtype} --backend {spec.backend} --device cpu|cuda:N")
    same = [w for w in workers if w.get("model_identity") == spec.model.identity]
    if same:
        served = ", ".join(f"{w['name']} ({w.get('task')} {w.get('dtype')} {w.get('backend')})" for w in same[:6])
        text += (f". Live workers of this model serve other settings: {served}; submit with those (--dtype ...), "
                 "or start workers with the job's")
    return text


def conclude(job: Job, state: JobState) -> JobStatus:
    status = job.status(state)
    if status.problems:
        raise Qwen3BatchError(f"job check failed, not marked done: {'; '.join(status.problems[:3])}")
    return status


# --- small in-memory batches ----------------------------------------------------------------------------
def embed(texts: list[str], *, model: str | Path, device: str = defaults.DEFAULT_DEVICE, dtype: str = "auto",
          dim: int | None = None, instruction: str | None = None, seqlens: tuple[int, ...] = defaults.DEFAULT_SEQLENS,
          backend: str = defaults.DEFAULT_BACKEND) -> np.ndarray:
    """Embeddings [len(texts), dim] (float32, unit length) from the same engine the workers run.
    With `instruction`, the texts are queries (the Instruct/Query template); without, documents.
    A text the engine cannot embed raises, naming it."""
    from common.templates import format_query

    engine = _engine(str(model), "embed", device, dtype, tuple(seqlens), backend)
    formatted = [format_query(t, instruction) if instruction is not None else t for t in texts]
    out = engine.embed(formatted, dim=dim)
    _raise_row_errors(out.errors)
    return out.vectors


def rerank(queries: list[str], documents: list[str], *, model: str | Path, device: str = defaults.DEFAULT_DEVICE,
           dtype: str = "auto", instruction: str = defaults.DEFAULT_RERANK_INSTRUCTION,
           seqlens: tuple[int, ...] = defaults.DEFAULT_SEQLENS, backend: str = defaults.DEFAULT_BACKEND) -> np.ndarray:
    """P(yes) per (query, document) pair, [n] float32, from the same engine the workers run."""
    engine = _engine(str(model), "rerank", device, dtype, tuple(seqlens), backend)
    out = engine.rerank(queries, documents, instruction=instruction)
    _raise_row_errors(out.errors)
    return out.scores


@functools.lru_cache(maxsize=4)
def _engine(model: str, task: str, device: str, dtype: str, seqlens: tuple[int, ...], backend: str):
    """Loaded once per process and settings: a notebook calls embed() many times."""
    from workers.engines.base import EngineSpec
    from workers.engines.loading import inspect_model
    from workers.engines.registry import create_engine

    inspect_model(model, task, tokenizer=False)
    if dtype == "auto":
        dtype = auto_dtype(None, "", task, backend, device, Reporter())
    return create_engine(EngineSpec(model=model_ref(model).source, task=task, backend=backend, dtype=dtype,
                                    device=device, seqlens=seqlens))


def _raise_row_errors(errors: list[str | None]) -> None:
    bad = [(i, e) for i, e in enumerate(errors) if e is not None]
    if bad:
        shown = "; ".join(f"row {i}: {e}" for i, e in bad[:5])
        raise Qwen3BatchError(f"{len(bad)} inputs could not be processed: {shown}")
