"""What a worker does with one shard message: admit it, decide whether to run it, run it, finalize.

The runner owns delivery: the message's checks (schema, roots, agreement with the plan), and
whether a shard runs at all (cancelled, already committed, quarantined, attempts left). run_shard
(workers/pipeline.py) only computes and commits. No Celery here: the task in tasks.py is a thin
shell around `handle_message`, and tests call this directly. Raising RetryShard asks the task
layer to deliver the message again.
"""

import functools
import logging
import os
import random
import socket
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

import pydantic
import redis

from common import dispatch, faults, heartbeats, keys, window
from common.errors import CommitBroken, PermanentShardError, RefusedMessage, describe, is_transient, store_backoff_s
from common.io.plans import Plan, load_plan
from common.io.store import OutputStore, new_attempt_id
from common.model_identity import model_ref
from common.paths import check_within
from common.rates import RateWindow
from common.schemas import JOB_NAME, SHARD_ID, AttemptNote, CommitRecord, QuarantineRecord, ShardMessage, ShardSpec
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
    shards_done: int = 0  # deliveries handled to their end (committed, found done, lost the race, or failed)
    stalled: str = ""  # why this worker waits: the store failing (full, read-only, unreachable), shown in its heartbeat
    store_failures: int = 0  # deliveries in a row that the store failed: the backoff grows with them
    started_at: float = field(default_factory=time.time)
    window: RateWindow = field(default_factory=RateWindow)

    def __post_init__(self):
        self.output_root = self.output_root or self.settings.worker_output_root
        self.input_roots = self.input_roots or self.settings.worker_input_roots

    @functools.cached_property
    def serves(self) -> dict[str, str]:
        """What this worker's engine computes: a job whose plan asks for anything else is not its to
        run, whatever queue its message came through (a personal queue, a hand-made message)."""
        spec = self.engine.spec
        identity = self.description.get("model_identity") or model_ref(spec.model).identity
        return {"model identity": identity, "task": spec.task, "dtype": spec.dtype, "backend": spec.backend}

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
            self.check_serves(plan)
            for source in plan.spec.reuse:  # read by its shards: only where this worker may read
                check_within(source, (self.output_root, *self.input_roots), "--reuse source",
                             f"{ENV_PREFIX}OUTPUT_ROOT / {ENV_PREFIX}INPUT_ROOTS")
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

    def check_serves(self, plan: Plan) -> None:
        spec = plan.spec
        wants = {"model identity": spec.model.identity, "task": spec.task, "dtype": spec.dtype, "backend": spec.backend}
        differ = [f"{k} {wants[k][:16]!r} (this worker: {self.serves[k][:16]!r})" for k in wants
                  if wants[k] != self.serves[k]]
        if differ:
            raise RefusedMessage(f"job {plan.job_id} ({spec.model.source}) is not what this worker computes: its "
                                 f"{', '.join(differ)}; left for the workers of queue {plan.queue}")

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
    except Exception as exc:  # the store failed while the plan was read: wait for it, then again
        if not is_transient(exc):
            raise
        wait_for_store(ctx, f"job {message.job_id}", describe(exc))
        raise RetryShard(describe(exc)) from exc
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
    """Whether and how this delivery of the shard runs; returns what became of it.

    Redis's counter of deliveries is a hint, never a verdict: anyone can write it. A delivery it
    calls a repeat looks in the store first (a commit or a quarantine already there; the notes of
    earlier deliveries) and leaves a note of its own, which stays if its worker dies. Only those
    notes and a permanent error quarantine a shard. A full, read-only or unreachable store is
    waited out (is_transient), however long it takes."""
    job_id, shard_id = plan.job_id, shard.shard_id
    cancelled, done_bit = dispatch.take(ctx.redis, job_id, shard, ctx.name)  # no longer waits: running here
    if ctx.cancelled(store, job_id, cancelled):
        dispatch.release(ctx.redis, job_id, shard_id)
        return "cancelled"
    if ctx.reconciler is not None:
        ctx.reconciler.remember(job_id, store.url)
    repeat = ctx.redis.hincrby(keys.job_attempts(job_id), shard_id, 1) > 1 or done_bit
    note = None
    start(ctx, job_id, shard)
    try:
        if repeat:
            earlier = settle_earlier(ctx, store, plan, shard)
            if earlier:
                return earlier
            note = Note(new_attempt_id(), AttemptNote(shard_id=shard_id, worker=ctx.name, started_at=time.time()))
            store.note_attempt(note.token, note.body)  # stays if this worker is lost: that is the count
        outcome = run_shard(store, plan, shard, ctx.engine, ctx.name, fault=faults.inject, progress=ctx.progress)
    except PermanentShardError as exc:  # the same on every attempt: no retry
        quarantine(ctx, store, plan, shard, 1, str(exc)[:2000])
        return "quarantined"
    except Exception as exc:  # any other failure of one shard: retry, wait, or quarantine; never crash the job
        return failed(ctx, store, plan, shard, note, exc)
    finally:
        ctx.shards_done += 1
        stop(ctx)
    ctx.stalled, ctx.store_failures = "", 0
    announce(ctx, store, plan, shard, outcome.record)
    return outcome.status


@dataclass
class Note:
    token: str
    body: AttemptNote


def settle_earlier(ctx: WorkerContext, store: OutputStore, plan: Plan, shard: ShardSpec) -> str:
    """What earlier deliveries left: a commit (finished here if a crash stopped it before its files
    were published; withdrawn if its files are gone), a quarantine, or enough notes of failed and
    lost deliveries to give up. '' when this delivery should run the shard."""
    committed = store.load_commit(shard.shard_id)
    if committed is not None:
        try:
            store.publish(committed)  # a crash between commit and publish is finished here
        except CommitBroken as exc:
            withdraw(ctx, store, plan, shard, committed, str(exc))
        else:
            announce(ctx, store, plan, shard, committed)
            return "already_committed"
    given_up = store.load_quarantine(shard.shard_id)
    if given_up is not None:
        announce(ctx, store, plan, shard, given_up)
        return "already_quarantined"
    notes = store.attempt_notes(shard.shard_id)
    if len(notes) >= ctx.settings.max_attempts:
        quarantine(ctx, store, plan, shard, len(notes), quarantine_reason(ctx, plan, shard, notes))
        return "quarantined"
    return ""


def quarantine_reason(ctx: WorkerContext, plan: Plan, shard: ShardSpec, notes: list[AttemptNote]) -> str:
    """The errors the notes hold; for deliveries that never reported back, that their worker was
    lost, and what its main process saw last (a hard time limit's kill), if it told Redis."""
    failed = sorted((n for n in notes if n.error), key=lambda n: n.started_at)
    lost = sorted((n for n in notes if not n.error), key=lambda n: n.started_at)
    parts = []
    if failed:
        parts.append(f"failed {len(failed)} times; last error: {failed[-1].error}")
    if lost:
        seen = ctx.redis.hget(keys.job_errors(plan.job_id), shard.shard_id)
        parts.append(f"worker lost {len(lost)} times on this shard (last {lost[-1].worker}: "
                     + (f"{seen.decode(errors='replace')})" if seen else "killed, out of memory or its host lost; see "
                        "its log)"))
    return "; ".join(parts)[:2000]


def failed(ctx: WorkerContext, store: OutputStore, plan: Plan, shard: ShardSpec, note: Note | None,
           exc: Exception) -> str:
    """A delivery that raised. Another delivery may have committed the shard meanwhile (this one was
    paused, its files removed by the winner): then nothing failed. A store that is full, read-only
    or unreachable is waited for, and the delivery repeated, without a bound. Any other error is
    noted in the store and retried, until the notes reach the attempt cap."""
    reason = describe(exc)
    try:
        if store.load_commit(shard.shard_id) is not None:
            log.info("shard %s of %s: another delivery committed it first (%s)", shard.shard_id, plan.job_id, reason)
            dispatch.release(ctx.redis, plan.job_id, shard.shard_id)
            return "lost_race"
        if not is_transient(exc):
            note = note or Note(new_attempt_id(), AttemptNote(shard_id=shard.shard_id, worker=ctx.name,
                                                              started_at=time.time()))
            store.note_attempt(note.token, note.body.model_copy(update={"error": reason}))
            notes = store.attempt_notes(shard.shard_id)
            failures = len(notes)
    except Exception as store_exc:  # the store itself fails: what to wait for
        if not is_transient(store_exc):
            raise
        exc, reason = store_exc, describe(store_exc)
    if is_transient(exc):
        wait_for_store(ctx, f"shard {shard.shard_id} of {plan.job_id}", reason)
    else:
        log.error("shard %s of %s failed (%d of %d noted): %s", shard.shard_id, plan.job_id, failures,
                  ctx.settings.max_attempts, reason, exc_info=exc)
        if failures >= ctx.settings.max_attempts:
            quarantine(ctx, store, plan, shard, failures, quarantine_reason(ctx, plan, shard, notes))
            return "quarantined"
        time.sleep(ctx.settings.retry_countdown_s)  # still this worker's: nothing publishes it meanwhile
    dispatch.note_error(ctx.redis, plan.job_id, shard.shard_id, reason)
    # Celery publishes the retry: it is queued again, so the reconciler leaves it alone.
    dispatch.mark_queued(ctx.redis, plan.job_id, [shard])
    dispatch.release(ctx.redis, plan.job_id, shard.shard_id)
    raise RetryShard(reason) from exc


def wait_for_store(ctx: WorkerContext, what: str, reason: str) -> None:
    """Back off before the delivery is repeated: 2, 4, 8 ... up to a minute while
    the store keeps failing, the cause in this worker's heartbeat (`producer workers`, `status`,
    `--wait` show it). The shard stays this worker's meanwhile, so nothing publishes it again."""
    ctx.store_failures += 1
    delay = store_backoff_s(ctx.store_failures, ctx.settings.retry_countdown_s)
    delay *= random.uniform(0.8, 1.2)  # workers that failed together do not all come back at once
    ctx.stalled = f"{reason[:300]} ({what}; retrying in {delay:.0f} s)"
    log.warning("the store fails: %s; %s is retried in %.0f s", reason, what, delay)
    beat(ctx)
    time.sleep(delay)


def withdraw(ctx: WorkerContext, store: OutputStore, plan: Plan, shard: ShardSpec, record: CommitRecord,
             why: str) -> None:
    log.warning("shard %s of %s: its commit is withdrawn and the shard computed again: %s", shard.shard_id,
                plan.job_id, why)
    store.withdraw_commit(record)


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
                       rows_rejected=record.rows_rejected, tokens=record.tokens,
                       rows_deduplicated=record.rows_deduplicated, rows_reused=record.rows_reused)
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
                 tokens_per_s=round(tokens_per_s, 1), shards_done=ctx.shards_done, stalled=ctx.stalled,
                 **process_memory(),
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
