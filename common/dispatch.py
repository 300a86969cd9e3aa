"""Publishing shard messages, and the Redis records of a job's deliveries: one place, used by
`producer submit` and `resume`, the window (common/window.py), the reconciler
(common/reconcile.py), and workers as they take and finish shards.

Records, per job (common/keys.py); each is bounded by the messages in flight or the workers:
    jobs_index   job -> its output, so that `producer jobs`, `status JOB` and the reconciler find it
    active_jobs  the jobs the reconciler watches until they are finished
    queued       shard -> "<published at> <ordinal>": its message waits (dropped when a worker takes it)
    running      shard -> {worker, since, ordinal}: taken and not finished
    cursor       shards below it have all been published once; the window tops up from it
    done         a bit per shard, committed or quarantined: the window skips them
    log          commits and quarantines not yet folded into the store's manifest
The records live and die with the queues: a Redis restart without persistence loses them all,
and the reconciler sets the window up again from the store (common/window.open_window).
"""

import json
import time
from collections.abc import Callable

import redis
from celery import Celery
from kombu.exceptions import OperationalError

from common import defaults, faults, keys
from common.broker import BrokerUnreachableError, redact_url
from common.celery_app import PUBLISH_RETRY_POLICY, make_queue
from common.io.plans import Plan
from common.jobstate import Event
from common.schemas import ShardMessage, ShardSpec

FINISHED_JOB_DONE_TTL_S = 24 * 3600  # a finished job's done bits stay this long: late duplicates are skipped cheaply


def register_job(client: redis.Redis, plan: Plan, output: str) -> None:
    client.hset(keys.jobs_index(), plan.job_id, json.dumps({"output": output, "queue": plan.queue,
                                                            "submitted_at": time.time()}))
    client.sadd(keys.active_jobs(), plan.job_id)


def job_output(client: redis.Redis, job_id: str) -> str | None:
    raw = client.hget(keys.jobs_index(), job_id)
    return json.loads(raw)["output"] if raw else None


def list_jobs(client: redis.Redis) -> dict[str, str]:
    return {k.decode(): json.loads(v)["output"] for k, v in sorted(client.hgetall(keys.jobs_index()).items())}


def forget_job(client: redis.Redis, job_id: str) -> None:
    """A finished job: the reconciler stops watching it and its delivery records go (the index
    stays, and the done bits for a day, so that a late duplicate message is skipped cheaply). The
    log is left to the folds that trim it: an entry pushed a moment ago (a late commit) must reach
    the next one."""
    kept = (keys.job_done(job_id), keys.job_log(job_id))
    with client.pipeline(transaction=True) as pipe:
        pipe.srem(keys.active_jobs(), job_id)
        pipe.delete(*[k for k in keys.job_keys(job_id) if k not in kept])
        for key in kept:
            pipe.expire(key, FINISHED_JOB_DONE_TTL_S)
        pipe.execute()


def shard_message(plan: Plan, output: str, shard: ShardSpec) -> ShardMessage:
    return ShardMessage(job_id=plan.job_id, output=output, shard_id=shard.shard_id, ordinal=shard.ordinal,
                        input_path=plan.input(shard.file_index).path, row_start=shard.row_start,
                        row_end=shard.row_end)


class Publisher:
    """Sends shard messages on a job's queue, each recorded as queued BEFORE it is sent: a worker
    that takes it deletes the record, which must not come back after it (a record written after
    the send could outlive the message), and a reconciler pass meanwhile must not publish what this
    call is about to. A record whose message never went out (this process died) is stale once the
    queue is empty, and the reconciler then publishes the shard. Duplicates are harmless: commits
    are first-committer-wins."""

    def __init__(self, app: Celery, client: redis.Redis, on_progress: Callable[[int], None] = lambda sent: None):
        self.app, self.client, self.on_progress = app, client, on_progress
        self.sent = 0  # messages sent by this publisher, for on_progress

    def publish(self, plan: Plan, output: str, shards: list[ShardSpec], cursor: int | None = None) -> int:
        """cursor: the window's new cursor, moved in the same transaction as the records."""
        if not shards and cursor is None:
            return 0
        queue = make_queue(plan.queue)
        task_name = keys.SHARD_TASKS[plan.spec.task]
        sent = 0
        try:
            mark_queued(self.client, plan.job_id, shards, cursor)
            with self.app.producer_or_acquire() as producer:
                for shard in shards:
                    faults.inject("enqueue", shard.shard_id)
                    message = shard_message(plan, output, shard)
                    self.app.send_task(task_name, kwargs=message.model_dump(), queue=queue, declare=[queue],
                                       producer=producer, retry=True, retry_policy=PUBLISH_RETRY_POLICY)
                    sent += 1
                    self.sent += 1
                    self.on_progress(self.sent)
        except (OperationalError, redis.ConnectionError) as exc:
            raise BrokerUnreachableError(f"publishing to {redact_url(self.app.conf.broker_url)} failed after {sent} "
                                         f"of {len(shards)} shards ({exc}); the reconciler publishes the rest once the "
                                         f"broker is back (or run `producer resume {plan.job_id}`)") from exc
        return sent


def mark_queued(client: redis.Redis, job_id: str, shards: list[ShardSpec], cursor: int | None = None) -> None:
    now = time.time()
    with client.pipeline(transaction=True) as pipe:
        if shards:
            pipe.hset(keys.job_queued(job_id), mapping={s.shard_id: f"{now} {s.ordinal}" for s in shards})
        if cursor is not None:
            pipe.set(keys.job_cursor(job_id), cursor)
        pipe.execute()


def waiting_messages(client: redis.Redis, queue: str) -> int:
    """Messages waiting in a queue (not those a worker holds unacked)."""
    with client.pipeline(transaction=False) as pipe:
        for name in keys.queue_lists(queue):
            pipe.llen(name)
        return sum(pipe.execute())


# --- a worker's side ---------------------------------------------------------------------------------------
def take(client: redis.Redis, job_id: str, shard: ShardSpec, worker: str) -> tuple[bool, bool]:
    """A worker starts on a shard: its record moves from queued to running in one step (a
    reconciler never sees it in neither). Returns (cancelled in Redis, its done bit is set)."""
    with client.pipeline(transaction=True) as pipe:
        pipe.hdel(keys.job_queued(job_id), shard.shard_id)
        pipe.hset(keys.job_running(job_id), shard.shard_id,
                  json.dumps({"worker": worker, "since": time.time(), "ordinal": shard.ordinal}))
        pipe.exists(keys.job_cancelled(job_id))
        pipe.getbit(keys.job_done(job_id), shard.ordinal)
        _, _, cancelled, done = pipe.execute()
    return bool(cancelled), bool(done)


def release(client: redis.Redis, job_id: str, shard_id: str) -> None:
    """The shard was not finished here (a retry, a cancel): nothing holds it any more."""
    client.hdel(keys.job_running(job_id), shard_id)


def reopen(client: redis.Redis, plan: Plan, ordinals: list[int]) -> None:
    """Shards pending again (a withdrawn commit): their done bits and delivery counts go."""
    shards = [plan.shard_at(o) for o in ordinals]
    with client.pipeline(transaction=True) as pipe:
        for shard in shards:
            pipe.setbit(keys.job_done(plan.job_id), shard.ordinal, 0)
        pipe.hdel(keys.job_attempts(plan.job_id), *[s.shard_id for s in shards])
        pipe.persist(keys.job_done(plan.job_id))
        pipe.sadd(keys.active_jobs(), plan.job_id)
        pipe.execute()


def note_error(client: redis.Redis, job_id: str, shard_id: str, reason: str) -> None:
    """The last error of a shard's deliveries, for the quarantine reason and `status`. The key
    expires: a paused worker's late error must not outlive the job that forgot it."""
    with client.pipeline(transaction=False) as pipe:
        pipe.hset(keys.job_errors(job_id), shard_id, reason)
        pipe.expire(keys.job_errors(job_id), defaults.ERRORS_TTL_S)
        pipe.execute()


def announce(client: redis.Redis, job_id: str, shard: ShardSpec, kind: str, rows_in: int = 0, rows_out: int = 0,
             rows_rejected: int = 0, tokens: int = 0, rows_deduplicated: int = 0, rows_reused: int = 0) -> int:
    """A shard is committed ("c") or quarantined ("q"): logged for the next fold, its done bit set,
    its records dropped, in one step; followers are told on the job's channel. Returns how many
    shards have their done bit set (the job may be finished when that is all of them)."""
    event = Event(kind, shard.ordinal, rows_in, rows_out, rows_rejected, tokens, rows_deduplicated, rows_reused)
    with client.pipeline(transaction=True) as pipe:
        pipe.rpush(keys.job_log(job_id), event.encode())
        pipe.setbit(keys.job_done(job_id), shard.ordinal, 1)
        pipe.hdel(keys.job_running(job_id), shard.shard_id)
        pipe.hdel(keys.job_attempts(job_id), shard.shard_id)
        pipe.hdel(keys.job_errors(job_id), shard.shard_id)
        pipe.publish(keys.job_events(job_id), shard.shard_id)
        pipe.bitcount(keys.job_done(job_id))
        return pipe.execute()[-1]


def read_log(client: redis.Redis, job_id: str, limit: int) -> list[bytes]:
    return client.lrange(keys.job_log(job_id), 0, limit - 1)


def trim_log(client: redis.Redis, job_id: str, folded: int) -> None:
    """Drop the first `folded` entries (those folded into a stored manifest); later ones stay."""
    if folded:
        client.ltrim(keys.job_log(job_id), folded, -1)
