"""What a worker does with one shard message: admit it, decide whether to run it, run it, finalize.

The runner owns delivery: the message's checks (schema, roots, agreement with the plan), and
whether a shard runs at all (cancelled, already committed, quarantined, attempts left). run_shard
(workers/pipeline.py) only computes and commits. No Celery here: the task in tasks.py is a thin
shell around `handle_message`, and tests call this directly. Raising RetryShard asks the task
layer to deliver the message again.
"""

import logging
import os
import socket
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

import pydantic
import redis

from common import dispatch, faults, heartbeats, keys, window
from common.errors import PermanentShardError, RefusedMessage
from common.io.plans import Plan, load_plan
from common.io.store import OutputStore
from common.paths import check_within
from common.rates import RateWindow
from common.schemas import JOB_NAME, SHARD_ID, CommitRecord, QuarantineRecord, ShardMessage, ShardSpec
from common.settings import ENV_PREFIX, Settings
from workers.engines.base import Engine
from workers.memory import process_memory
from workers.pipeline import run_shard

log = logging.getLogger(__name__)

PLANS_KEPT = 16  # jobs whose plans a worker keeps open (a job's plan is read again when it comes back)


class RetryShard(Exception):
    """The shard failed this time and has attempts left."""


@dataclass
class WorkerContext:
    name: str
    engine: Engine
    settings: Settings
    redis: redis.Redis
    description: dict
    # Resolved once at start: a later chdir or a changed environment does not widen them.
    output_root: str = ""
    input_roots: tuple[str, ...] = ()
    plans: OrderedDict = field(default_factory=OrderedDict)  # (output, job) -> (OutputStore, Plan), the recent jobs
    reconciler: object = None  # common.reconcile.Reconciler, told about every job this worker runs
    publisher: object = None  # common.dispatch.Publisher: the window is topped up after each shard
    cancel_checked: dict = field(default_factory=dict)  # job -> (when, cancelled): the store's mark, read now and then
    current_job: str | None = None
    current_shard: str | None = None
    current_ordinal: int | None = None
    current_rows: int = 0  # rows and tokens of the current shard done so far (its heartbeat shows them)
    current_tokens: int = 0
    rows_done: int = 0  # rows and tokens computed since start, committed or not
    tokens_done: int = 0
    shards_done: int = 0  # deliveries that ran a shard to its end (committed, lost the race, or failed)
    started_at: float = field(default_factory=time.time)
    window: RateWindow = field(default_factory=RateWindow)

    def __post_init__(self):
        self.output_root = self.output_root or self.settings.worker_output_root
        self.input_roots = self.input_roots or self.settings.worker_input_roots

    def progress(self, rows: int, tokens: int) -> None:
        """A forward pass (or a shard's rejects) done: what the heartbeat reports between commits."""
        self.current_rows += rows
        self.current_tokens += tokens
        self.rows_done += rows
        self.tokens_done += tokens

    def admit(self, message: ShardMessage) -> tuple[OutputStore, Plan, ShardSpec]:
        """The message's store, plan and shard, once every field checks out; RefusedMessage otherwise."""
        check_within(message.output, (self.output_root,), "output", f"{ENV_PREFIX}OUTPUT_ROOT")
        key = (message.output, message.job_id)
        if key not in self.plans:
            store = OutputStore(message.output)
            store.check_contained()
            plan = load_plan(store)
            if plan.job_id != message.job_id:
                raise RefusedMessage(f"{message.output} holds job {plan.job_id}, not {message.job_id}")
            store.check_commits_supported()
            self.plans[key] = (store, plan)
            if len(self.plans) > PLANS_KEPT:
                self.plans.popitem(last=False)
        self.plans.move_to_end(key)
        store, plan = self.plans[key]
        try:
            shard = plan.shard_at(message.ordinal)
        except KeyError as exc:
            raise RefusedMessage(f"shard {message.shard_id} (#{message.ordinal}): {exc.args[0]}") from None
        planned_input = plan.input(shard.file_index).path
        if (message.shard_id, message.input_path, message.row_start, message.row_end) != (
                shard.shard_id, planned_input, shard.row_start, shard.row_end):
            raise RefusedMessage(f"shard {message.shard_id} (#{message.ordinal}): the message names "
                                 f"{message.shard_id} of {message.input_path} rows {message.row_start}.."
                                 f"{message.row_end}, the plan {shard.shard_id} of {planned_input} rows "
                                 f"{shard.row_start}..{shard.row_end}")
        check_within(planned_input, self.input_roots, "input", f"{ENV_PREFIX}INPUT_ROOTS")
        return store, plan, shard

    def cancelled(self, store: OutputStore, job_id: str, in_redis: bool) -> bool:
        """Redis's flag, else the store's mark (which outlives a Redis restart), read at most once
        per reconcile interval per job: not a request to the store for every shard."""
        if in_redis:
            return True
        checked = self.cancel_checked.get(job_id)
        if checked is None or time.monotonic() - checked[0] > self.settings.reconcile_interval_s:
            checked = self.cancel_checked[job_id] = (time.monotonic(), store.is_cancelled())
        return checked[1]


def handle_message(ctx: WorkerContext, body: dict) -> str:
    try:
        message = ShardMessage.model_validate(body)
        store, plan, shard = ctx.admit(message)
    except (pydantic.ValidationError, RefusedMessage) as exc:
        refuse(ctx, body, exc)
        return "refused"
    outcome = "failed"
    try:
        outcome = deliver(ctx, store, plan, shard)
        return outcome
    finally:
        if outcome != "cancelled":  # a cancelled job's leftover messages are drained, never replaced
            top_up(ctx, store, plan)


def refuse(ctx: WorkerContext, body, exc: Exception) -> None:
    """Drop the message (it is acked, never run), log why, and tell the job's followers when the
    message names a well-formed job: `--wait` shows refusals, such as an output outside the root."""
    reason = f"{type(exc).__name__}: {exc}"[:2000]
    log.error("refused a shard message: %s", reason)
    job, shard = (body.get("job_id"), body.get("shard_id")) if isinstance(body, dict) else (None, None)
    if not (isinstance(job, str) and JOB_NAME.match(job) and isinstance(shard, str) and SHARD_ID.match(shard)):
        return
    try:
        ctx.redis.hset(keys.job_refused(job), shard, f"{ctx.name}: {reason}")
    except redis.RedisError:
        pass


def deliver(ctx: WorkerContext, store: OutputStore, plan: Plan, shard: ShardSpec) -> str:
    """Whether and how this delivery of the shard runs; returns what became of it."""
    job_id, shard_id = plan.job_id, shard.shard_id
    cancelled, done_bit = dispatch.take(ctx.redis, job_id, shard, ctx.name)  # no longer waits: running here
    if ctx.cancelled(store, job_id, cancelled):
        dispatch.release(ctx.redis, job_id, shard_id)
        return "cancelled"
    if ctx.reconciler is not None:
        ctx.reconciler.remember(job_id, store.url)
    attempt = ctx.redis.hincrby(keys.job_attempts(job_id), shard_id, 1)
    if attempt > 1 or done_bit:  # delivered before (a duplicate, a retry, a redelivery): maybe done already
        committed = store.load_commit(shard_id)
        if committed is not None:
            store.publish(committed)  # a crash between commit and publish is finished here
            announce(ctx, store, plan, shard, committed)
            return "already_committed"
        given_up = store.load_quarantine(shard_id)
        if given_up is not None:
            announce(ctx, store, plan, shard, given_up)
            return "already_quarantined"
    if attempt > ctx.settings.max_attempts:
        # Deliveries that never reported back: the worker died on this shard each time (a crash, an
        # out-of-memory kill, the hard time limit, a lost host).
        last = ctx.redis.hget(keys.job_errors(job_id), shard_id)
        reason = f"worker lost {attempt - 1} times on this shard" + (f"; last error: {last.decode()}" if last else "")
        quarantine(ctx, store, plan, shard, attempt - 1, reason)
        return "quarantined"
    start(ctx, job_id, shard)
    try:
        outcome = run_shard(store, plan, shard, ctx.engine, ctx.name, fault=faults.inject, progress=ctx.progress)
    except PermanentShardError as exc:  # the same on every attempt: no retry
        quarantine(ctx, store, plan, shard, attempt, str(exc)[:2000])
        return "quarantined"
    except Exception as exc:  # any other failure of one shard: count it, retry or quarantine; never crash the job
        reason = f"{type(exc).__name__}: {exc}"[:2000]
        ctx.redis.hset(keys.job_errors(job_id), shard_id, reason)
        log.exception("shard %s of %s failed (attempt %d/%d)", shard_id, job_id, attempt, ctx.settings.max_attempts)
        if attempt >= ctx.settings.max_attempts:
            quarantine(ctx, store, plan, shard, attempt, reason)
            return "quarantined"
        # Celery publishes the retry: it is queued again, so the reconciler leaves it alone.
        dispatch.mark_queued(ctx.redis, job_id, [shard])
        dispatch.release(ctx.redis, job_id, shard_id)
        raise RetryShard(reason) from exc
    finally:
        ctx.shards_done += 1
        stop(ctx)
    announce(ctx, store, plan, shard, outcome.record)
    return outcome.status


def start(ctx: WorkerContext, job_id: str, shard: ShardSpec) -> None:
    ctx.current_job, ctx.current_shard, ctx.current_ordinal = job_id, shard.shard_id, shard.ordinal
    ctx.current_rows = ctx.current_tokens = 0
    beat(ctx)


def stop(ctx: WorkerContext) -> None:
    ctx.current_job = ctx.current_shard = ctx.current_ordinal = None
    ctx.current_rows = ctx.current_tokens = 0
    beat(ctx)


def quarantine(ctx: WorkerContext, store: OutputStore, plan: Plan, shard: ShardSpec, attempts: int,
               reason: str) -> None:
    record = QuarantineRecord(shard_id=shard.shard_id, attempts=attempts, reason=reason, quarantined_at=time.time())
    if not store.quarantine(record):
        record = store.load_quarantine(shard.shard_id) or record
    log.error("shard %s of %s quarantined after %d attempts: %s", shard.shard_id, plan.job_id, attempts, reason)
    announce(ctx, store, plan, shard, record)


def announce(ctx: WorkerContext, store: OutputStore, plan: Plan, shard: ShardSpec,
             record: CommitRecord | QuarantineRecord) -> None:
    """Tell Redis (and the job's followers) that a shard is done: logged for the next fold, its
    records dropped. A hint, never the truth, which is the store's: if this is lost, the shard is
    delivered again, found committed, and announced then. The worker that announces the last
    shard runs a reconciler pass over the job at once (watching it again if it had finished: a late
    commit after a quarantine), which writes the success marker."""
    if isinstance(record, CommitRecord):
        figures = dict(kind="c", rows_in=record.rows_in, rows_out=record.rows_out,
                       rows_rejected=record.rows_rejected, tokens=record.tokens)
    else:
        figures = dict(kind="q", rows_in=shard.rows)
    try:
        done = dispatch.announce(ctx.redis, plan.job_id, shard, **figures)
    except redis.RedisError:
        return  # the shard is delivered again (or found below the cursor) and announced then
    if done >= plan.shards_total and ctx.reconciler is not None:
        ctx.reconciler.poke(plan.job_id, store.url)


def top_up(ctx: WorkerContext, store: OutputStore, plan: Plan) -> None:
    """After each shard: publish more of the job if its window has fallen below half."""
    if ctx.publisher is None:
        return
    try:
        window.top_up(ctx.redis, ctx.publisher, plan, store.url, only_below_half=True)
    except Exception:  # the reconciler tops up at its next pass; a shard's outcome must not depend on this
        log.exception("topping up the window of %s failed", plan.job_id)


def beat(ctx: WorkerContext) -> None:
    """Publish this worker's device, model, roots, current shard, rows done in it, and its recent rates."""
    rows_per_s, tokens_per_s = ctx.window.add(ctx.rows_done, ctx.tokens_done)
    state = dict(ctx.description, host=socket.gethostname(), pid=os.getpid(), current_job=ctx.current_job or "",
                 current_shard=ctx.current_shard or "",
                 current_ordinal="" if ctx.current_ordinal is None else ctx.current_ordinal,
                 current_rows=ctx.current_rows,
                 current_tokens=ctx.current_tokens, output_root=ctx.output_root,
                 input_roots=list(ctx.input_roots), rows_done=ctx.rows_done, rows_per_s=round(rows_per_s, 2),
                 tokens_per_s=round(tokens_per_s, 1), shards_done=ctx.shards_done, **process_memory(),
                 seen_at=time.time())
    try:
        heartbeats.publish(ctx.redis, ctx.name, state, ctx.settings.heartbeat_ttl_s)
    except redis.RedisError:
        pass  # Redis is down or restarting: the next beat tries again


def start_heartbeat(ctx: WorkerContext) -> threading.Thread:
    """Beat every TTL/6 seconds, besides the beats at the start and end of each shard."""

    def loop():
        while True:
            beat(ctx)
            time.sleep(ctx.settings.heartbeat_interval_s)

    thread = threading.Thread(target=loop, name="heartbeat", daemon=True)
    thread.start()
    return thread
