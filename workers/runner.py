"""What a worker does with one shard message: attempt cap, quarantine, run, finalize.

No Celery here: the task in tasks.py is a thin shell around `handle_message`, and tests call
this directly. Raising RetryShard asks the task layer to deliver the message again.
"""

import json
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, field

import redis

from common import defaults, faults, keys
from common.io.store import OutputStore
from common.jobstate import finalize, read_state
from common.schemas import Plan, QuarantineRecord, ShardMessage
from common.settings import Settings
from workers.engines.base import Engine
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
    plans: dict = field(default_factory=dict)  # (output, job) -> Plan, loaded once per job
    current_shard: str | None = None
    rows_done: int = 0
    tokens_done: int = 0
    started_at: float = field(default_factory=time.time)

    def plan_for(self, message: ShardMessage) -> tuple[OutputStore, Plan]:
        key = (message.output, message.job_id)
        if key not in self.plans:
            store = OutputStore(message.output)
            plan = store.load_plan()
            if plan.job_id != message.job_id:
                raise ValueError(f"{message.output} holds job {plan.job_id}, not {message.job_id}")
            self.plans[key] = (store, plan)
        return self.plans[key]


def handle_message(ctx: WorkerContext, body: dict) -> str:
    message = ShardMessage.model_validate(body)
    if not ctx.settings.output_allowed(message.output):
        # Whoever can write to Redis must not make a worker write elsewhere; the message is dropped.
        log.error("refused shard %s of %s: its output %s is outside QWEN3B_OUTPUT_ROOT=%s", message.shard_id,
                  message.job_id, message.output, ctx.settings.output_root)
        return "refused"
    store, plan = ctx.plan_for(message)
    if ctx.redis.exists(keys.job_cancelled(message.job_id)) or store.is_cancelled():
        return "cancelled"
    if store.load_commit(message.shard_id):
        return run_shard(store, plan, message.shard_id, ctx.engine, ctx.name).status
    attempt = ctx.redis.hincrby(keys.job_attempts(message.job_id), message.shard_id, 1)
    if attempt > ctx.settings.max_attempts:
        # Deliveries that never reported back: the worker died on this shard each time.
        last = ctx.redis.hget(keys.job_errors(message.job_id), message.shard_id)
        reason = f"worker lost {attempt - 1} times on this shard" + (f"; last error: {last.decode()}" if last else "")
        quarantine(ctx, store, plan, message, attempt - 1, reason)
        return "quarantined"
    ctx.current_shard = message.shard_id
    beat(ctx)
    try:
        outcome = run_shard(store, plan, message.shard_id, ctx.engine, ctx.name, fault=faults.inject)
    except Exception as exc:  # any failure of one shard: count it, retry or quarantine; never crash the job
        reason = f"{type(exc).__name__}: {exc}"[:2000]
        ctx.redis.hset(keys.job_errors(message.job_id), message.shard_id, reason)
        log.exception("shard %s of %s failed (attempt %d/%d)", message.shard_id, message.job_id, attempt,
                      ctx.settings.max_attempts)
        if attempt >= ctx.settings.max_attempts:
            quarantine(ctx, store, plan, message, attempt, reason)
            return "quarantined"
        raise RetryShard(reason) from exc
    finally:
        ctx.current_shard = None
        beat(ctx)
    if outcome.status == "committed":
        ctx.rows_done += outcome.record.rows_in
        ctx.tokens_done += outcome.record.tokens
        maybe_finalize(ctx, store, plan)
    return outcome.status


def quarantine(ctx: WorkerContext, store: OutputStore, plan: Plan, message: ShardMessage, attempts: int,
               reason: str) -> None:
    store.quarantine(QuarantineRecord(shard_id=message.shard_id, attempts=attempts, reason=reason,
                                      quarantined_at=time.time()))
    log.error("shard %s of %s quarantined after %d attempts: %s", message.shard_id, message.job_id, attempts, reason)
    maybe_finalize(ctx, store, plan)


def maybe_finalize(ctx: WorkerContext, store: OutputStore, plan: Plan) -> None:
    """The worker that finishes the last shard writes the success marker. A cheap count of the
    commit folders first, so the full check runs once per job, not once per shard."""
    done = _count(store.root / "_commits") + _count(store.root / "_quarantine")
    if done >= len(plan.shards):
        state = read_state(store, plan)
        if state.finished:
            finalize(store, state)


def _count(folder) -> int:
    try:
        return sum(1 for e in os.scandir(folder) if e.name.endswith(".json") and not e.name.startswith("."))
    except FileNotFoundError:
        return 0


def beat(ctx: WorkerContext) -> None:
    """Publish this worker's device, model, current shard and throughput."""
    elapsed = max(1e-9, time.time() - ctx.started_at)
    state = dict(ctx.description, host=socket.gethostname(), pid=os.getpid(), current_shard=ctx.current_shard or "",
                 rows_done=ctx.rows_done, rows_per_s=round(ctx.rows_done / elapsed, 2),
                 tokens_per_s=round(ctx.tokens_done / elapsed, 1), seen_at=time.time())
    try:
        ctx.redis.set(keys.worker_heartbeat(ctx.name), json.dumps(state), ex=defaults.WORKER_HEARTBEAT_TTL_S)
    except redis.RedisError:
        pass  # Redis is down or restarting: the next beat tries again


def start_heartbeat(ctx: WorkerContext) -> threading.Thread:
    """Beat every few seconds, besides the beats at the start and end of each shard."""

    def loop():
        while True:
            beat(ctx)
            time.sleep(defaults.WORKER_HEARTBEAT_S)

    thread = threading.Thread(target=loop, name="heartbeat", daemon=True)
    thread.start()
    return thread
