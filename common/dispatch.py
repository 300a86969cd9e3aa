"""Publishing shard messages, and the Redis records of what is queued: one place, used by
`producer submit` and `resume` and by the reconciler (common/reconcile.py) in any process.

Records, per job (common/keys.py):
    job_queued   shard -> when its last message was published (removed when a worker takes it)
    jobs_index   job -> its output, so that `producer jobs`, `status JOB` and the reconciler find it
    active_jobs  the jobs the reconciler watches until they are finished
The records live and die with the queues: a Redis restart without persistence loses both, and a
shard without a record and without a commit is what the reconciler publishes again.
"""

import json
import time
from collections.abc import Callable

import redis
from celery import Celery
from kombu.exceptions import OperationalError

from common import faults, keys
from common.broker import BrokerUnreachableError, redact_url
from common.celery_app import PUBLISH_RETRY_POLICY, make_queue
from common.schemas import Plan, ShardMessage


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
    """A finished job: the reconciler stops watching it and its delivery records go (the index stays)."""
    client.srem(keys.active_jobs(), job_id)
    client.delete(*keys.job_keys(job_id))


def shard_message(plan: Plan, output: str, shard_id: str) -> ShardMessage:
    shard = plan.shard(shard_id)
    return ShardMessage(job_id=plan.job_id, output=output, shard_id=shard_id,
                        input_path=plan.inputs[shard.file_index].path, row_start=shard.row_start,
                        row_end=shard.row_end)


def publish_shards(app: Celery, client: redis.Redis, plan: Plan, output: str, shard_ids: list[str],
                   on_progress: Callable[[int], None] = lambda n: None) -> int:
    """One small message per shard. Each is recorded as queued BEFORE it is sent: a worker that takes
    it deletes the record, which must not come back after it (a record written after the send could
    outlive the message), and a reconciler pass during a long enqueue must not publish what this
    call is about to. A record whose message never went out (this process died) is stale once the
    queue is empty, and the reconciler then publishes the shard. Duplicates are harmless: commits
    are first-committer-wins."""
    queue = make_queue(plan.queue)
    task_name = keys.SHARD_TASKS[plan.spec.task]
    sent = 0
    try:
        mark_queued(client, plan.job_id, shard_ids)
        with app.producer_or_acquire() as producer:
            for shard_id in shard_ids:
                faults.inject("enqueue", shard_id)
                message = shard_message(plan, output, shard_id)
                app.send_task(task_name, kwargs=message.model_dump(), queue=queue, declare=[queue],
                              producer=producer, retry=True, retry_policy=PUBLISH_RETRY_POLICY)
                sent += 1
                on_progress(sent)
    except (OperationalError, redis.ConnectionError) as exc:
        raise BrokerUnreachableError(f"publishing to {redact_url(app.conf.broker_url)} failed after {sent} of "
                                     f"{len(shard_ids)} shards ({exc}); the reconciler publishes the rest once the "
                                     f"broker is back (or run `producer resume {plan.job_id}`)") from exc
    return sent


def mark_queued(client: redis.Redis, job_id: str, shard_ids: list[str], chunk: int = 1000) -> None:
    now = time.time()
    for start in range(0, len(shard_ids), chunk):
        client.hset(keys.job_queued(job_id), mapping=dict.fromkeys(shard_ids[start:start + chunk], now))


def waiting_messages(client: redis.Redis, queue: str) -> int:
    """Messages waiting in a queue (not those a worker holds unacked)."""
    with client.pipeline(transaction=False) as pipe:
        for name in keys.queue_lists(queue):
            pipe.llen(name)
        return sum(pipe.execute())
