"""Enqueue shard tasks: the only producer module that talks to the broker."""

import json
import time
from collections.abc import Callable

import redis
from kombu.exceptions import OperationalError

from common import faults, keys
from common.broker import BrokerUnreachableError, check_broker, redact_url, redis_client
from common.celery_app import PUBLISH_RETRY_POLICY, make_app, make_queue
from common.errors import Qwen3BatchError
from common.io.store import OutputStore
from common.jobstate import read_state
from common.schemas import Plan, ShardMessage
from common.settings import Settings


def connect(settings: Settings) -> redis.Redis:
    """A checked connection; the errors say what to fix (see common.broker), plus --local."""
    client = redis_client(settings)
    try:
        check_broker(client, settings)
    except BrokerUnreachableError as exc:
        raise BrokerUnreachableError(f"{exc}, or run the job in-process with --local") from exc
    return client


def pending_shards(store: OutputStore, plan: Plan) -> list[str]:
    return read_state(store, plan).pending


def enqueue(settings: Settings, client: redis.Redis, store: OutputStore, plan: Plan, shard_ids: list[str],
            on_progress: Callable[[int], None] = lambda n: None) -> int:
    """Publish one small message per shard. Duplicates are harmless: commits are first-wins."""
    client.hset(keys.jobs_index(), plan.job_id, json.dumps({"output": str(store.root), "queue": plan.queue,
                                                            "submitted_at": time.time()}))
    client.delete(keys.job_cancelled(plan.job_id))
    if shard_ids:
        client.hdel(keys.job_attempts(plan.job_id), *shard_ids)
    app = make_app(settings)
    queue = make_queue(plan.queue)
    task_name = keys.SHARD_TASKS[plan.spec.task]
    sent = 0
    try:
        with app.producer_or_acquire() as producer:
            for shard_id in shard_ids:
                faults.inject("enqueue", shard_id)
                shard = plan.shard(shard_id)
                message = ShardMessage(job_id=plan.job_id, output=str(store.root), shard_id=shard_id,
                                       input_path=plan.inputs[shard.file_index].path, row_start=shard.row_start,
                                       row_end=shard.row_end)
                app.send_task(task_name, kwargs=message.model_dump(), queue=queue, declare=[queue],
                              producer=producer, retry=True, retry_policy=PUBLISH_RETRY_POLICY)
                sent += 1
                on_progress(sent)
    except OperationalError as exc:
        raise BrokerUnreachableError(f"publishing to {redact_url(settings.broker_url)} failed after {sent} of "
                                     f"{len(shard_ids)} shards ({exc}); run `producer resume {plan.job_id}` once "
                                     "the broker is back") from exc
    return sent


def live_workers(client: redis.Redis) -> list[dict]:
    workers = []
    for key in client.scan_iter(match=keys.worker_heartbeat_pattern(), count=500):
        raw = client.get(key)
        if raw:
            workers.append(dict(json.loads(raw), name=key.decode().split(":", 2)[2]))
    return sorted(workers, key=lambda w: w["name"])


def cancel(client: redis.Redis | None, store: OutputStore, plan: Plan) -> None:
    store.set_cancelled(True)
    if client is not None:
        client.set(keys.job_cancelled(plan.job_id), 1)


def find_output(client: redis.Redis | None, job: str) -> OutputStore:
    """JOB is an output folder, or a job id registered in Redis at submit time."""
    store = OutputStore(job)
    if store.plan_path.exists():
        return store
    if client is not None:
        raw = client.hget(keys.jobs_index(), job)
        if raw:
            return OutputStore(json.loads(raw)["output"])
    raise Qwen3BatchError(f"no job {job!r}: pass its output folder (Redis may have lost its job index)")
