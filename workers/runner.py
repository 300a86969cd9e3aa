"""What a worker does with one shard message: admit it, decide whether to run it, run it, finalize.

The runner owns delivery: the message's checks (schema, roots, agreement with the plan), and
whether a shard runs at all (cancelled, already committed, quarantined, attempts left). run_shard
(workers/pipeline.py) only computes and commits. No Celery here: the task in tasks.py is a thin
shell around `handle_message`, and tests call this directly. Raising RetryShard asks the task
layer to deliver the message again.
"""

import json
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, field

import pydantic
import redis

from common import faults, heartbeats, keys
from common.errors import PermanentShardError, RefusedMessage
from common.io.store import OutputStore
from common.jobstate import finalize, read_state
from common.paths import check_within
from common.rates import RateWindow
from common.schemas import JOB_NAME, SHARD_ID, Plan, QuarantineRecord, ShardMessage
from common.settings import ENV_PREFIX, Settings
from workers.engines.base import Engine
from workers.memory import process_memory
from workers.pipeline import run_shard

log = logging.getLogger(__name__)


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
    plans: dict = field(default_factory=dict)  # (output, job) -> (OutputStore, Plan), loaded once per job
    reconciler: object = None  # common.reconcile.Reconciler, told about every job this worker runs
    current_job: str | None = None
    current_shard: str | None = None
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

    def admit(self, message: ShardMessage) -> tuple[OutputStore, Plan]:
        """The message's store and plan, once every field checks out; RefusedMessage otherwise."""
        check_within(message.output, (self.output_root,), "output", f"{ENV_PREFIX}OUTPUT_ROOT")
        key = (message.output, message.job_id)
        if key not in self.plans:
            store = OutputStore(message.output)
            store.check_contained()
            plan = store.load_plan()
            if plan.job_id != message.job_id:
                raise RefusedMessage(f"{message.output} holds job {plan.job_id}, not {message.job_id}")
            store.check_commits_supported()
            self.plans[key] = (store, plan)
        store, plan = self.plans[key]
        if message.shard_id not in plan.shards_by_id:
            raise RefusedMessage(f"shard {message.shard_id} is not in the plan of {plan.job_id}")
        shard = plan.shard(message.shard_id)
        planned_input = plan.inputs[shard.file_index].path
        if (message.input_path, message.row_start, message.row_end) != (planned_input, shard.row_start, shard.row_end):
            raise RefusedMessage(f"shard {message.shard_id}: the message names {message.input_path} rows "
                                 f"{message.row_start}..{message.row_end}, the plan {planned_input} rows "
                                 f"{shard.row_start}..{shard.row_end}")
        check_within(planned_input, self.input_roots, "input", f"{ENV_PREFIX}INPUT_ROOTS")
        return store, plan


def handle_message(ctx: WorkerContext, body: dict) -> str:
    try:
        message = ShardMessage.model_validate(body)
        store, plan = ctx.admit(message)
    except (pydantic.ValidationError, RefusedMessage) as exc:
        refuse(ctx, body, exc)
        return "refused"
    if ctx.reconciler is not None:
        ctx.reconciler.remember(plan.job_id, store.url)
    return deliver(ctx, store, plan, message.shard_id)


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


def deliver(ctx: WorkerContext, store: OutputStore, plan: Plan, shard_id: str) -> str:
    """Whether and how this delivery of the shard runs; returns what became of it."""
    job_id = plan.job_id
    ctx.redis.hdel(keys.job_queued(job_id), shard_id)  # the message is taken: it no longer waits
    if ctx.redis.exists(keys.job_cancelled(job_id)) or store.is_cancelled():
        return "cancelled"
    committed = store.load_commit(shard_id)
    if committed is not None:
        store.publish(committed)  # a crash between commit and publish is finished here
        return "already_committed"
    if store.load_quarantine(shard_id) is not None:
        return "already_quarantined"
    attempt = ctx.redis.hincrby(keys.job_attempts(job_id), shard_id, 1)
    if attempt > ctx.settings.max_attempts:
        # Deliveries that never reported back: the worker died on this shard each time (a crash, an
        # out-of-memory kill, the hard time limit, a lost host).
        last = ctx.redis.hget(keys.job_errors(job_id), shard_id)
        reason = f"worker lost {attempt - 1} times on this shard" + (f"; last error: {last.decode()}" if last else "")
        quarantine(ctx, store, plan, shard_id, attempt - 1, reason)
        return "quarantined"
    start(ctx, job_id, shard_id)
    try:
        outcome = run_shard(store, plan, shard_id, ctx.engine, ctx.name, fault=faults.inject, progress=ctx.progress)
    except PermanentShardError as exc:  # the same on every attempt: no retry
        quarantine(ctx, store, plan, shard_id, attempt, str(exc)[:2000])
        return "quarantined"
    except Exception as exc:  # any other failure of one shard: count it, retry or quarantine; never crash the job
        reason = f"{type(exc).__name__}: {exc}"[:2000]
        ctx.redis.hset(keys.job_errors(job_id), shard_id, reason)
        log.exception("shard %s of %s failed (attempt %d/%d)", shard_id, job_id, attempt, ctx.settings.max_attempts)
        if attempt >= ctx.settings.max_attempts:
            quarantine(ctx, store, plan, shard_id, attempt, reason)
            return "quarantined"
        # Celery publishes the retry: it is queued again, so the reconciler leaves it alone.
        ctx.redis.hset(keys.job_queued(job_id), shard_id, time.time())
        raise RetryShard(reason) from exc
    finally:
        ctx.shards_done += 1
        stop(ctx, job_id, shard_id)
    if outcome.status == "committed":
        maybe_finalize(store, plan)
        announce(ctx, job_id, shard_id)
    return outcome.status


def start(ctx: WorkerContext, job_id: str, shard_id: str) -> None:
    ctx.redis.hset(keys.job_running(job_id), shard_id, json.dumps({"worker": ctx.name, "since": time.time()}))
    ctx.current_job, ctx.current_shard, ctx.current_rows, ctx.current_tokens = job_id, shard_id, 0, 0
    beat(ctx)


def stop(ctx: WorkerContext, job_id: str, shard_id: str) -> None:
    ctx.current_job = ctx.current_shard = None
    ctx.current_rows = ctx.current_tokens = 0
    try:
        ctx.redis.hdel(keys.job_running(job_id), shard_id)
    except redis.RedisError:
        pass  # a stale running record only makes the reconciler look twice
    beat(ctx)


def quarantine(ctx: WorkerContext, store: OutputStore, plan: Plan, shard_id: str, attempts: int,
               reason: str) -> None:
    store.quarantine(QuarantineRecord(shard_id=shard_id, attempts=attempts, reason=reason,
                                      quarantined_at=time.time()))
    log.error("shard %s of %s quarantined after %d attempts: %s", shard_id, plan.job_id, attempts, reason)
    maybe_finalize(store, plan)
    announce(ctx, plan.job_id, shard_id)


def announce(ctx: WorkerContext, job_id: str, shard_id: str) -> None:
    """Tell the job's followers that a shard is done (after the success marker, when this shard
    was the last): a hint that saves them a poll, never the truth, which is the store's."""
    try:
        ctx.redis.publish(keys.job_events(job_id), shard_id)
    except redis.RedisError:
        pass  # the follower's next poll finds the commit anyway


def maybe_finalize(store: OutputStore, plan: Plan) -> None:
    """The worker that finishes the last shard writes the success marker, and whoever commits after
    it (a late commit of a quarantined shard) writes it anew. A cheap count of the records first,
    so the full check runs once per job, not once per shard."""
    if store.count_done() >= len(plan.shards):
        state = read_state(store, plan)
        if state.finished:
            finalize(store, state)


def beat(ctx: WorkerContext) -> None:
    """Publish this worker's device, model, roots, current shard, rows done in it, and its recent rates."""
    rows_per_s, tokens_per_s = ctx.window.add(ctx.rows_done, ctx.tokens_done)
    state = dict(ctx.description, host=socket.gethostname(), pid=os.getpid(), current_job=ctx.current_job or "",
                 current_shard=ctx.current_shard or "", current_rows=ctx.current_rows,
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
