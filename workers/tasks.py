"""Thin Celery tasks for shards: decode, delegate to runner.handle_message, map RetryShard to a
retry. Start-up lives in workers/bootstrap.py, the compile task in workers/compile/task.py."""

import functools
import logging
import time

import redis
from billiard.exceptions import WorkerLostError
from celery import Celery, signals

from common import dispatch, keys
from common.schemas import JOB_NAME, MAX_ORDINAL, SHARD_ID
from common.settings import load_settings
from workers.bootstrap import boot_shard_worker
from workers.celery_request import SettingsOnlyRequest, drop_workflow
from workers.runner import RetryShard, WorkerContext, handle_message
from workers.spec import WorkerSpec

log = logging.getLogger(__name__)
_context: WorkerContext | None = None


class ShardRequest(SettingsOnlyRequest):
    """Celery's request, which also tells Redis what becomes of a shard whose pool child is gone. In
    the worker's main process (the child cannot: it is dead): the requeued message is queued again
    (so the reconciler does not publish a second copy), and a hard time limit leaves its reason
    (so the quarantine record of a shard that always hits it says so)."""

    def on_timeout(self, soft, timeout):
        if not soft:
            note_requeued(self.kwargs, f"TimeLimitExceeded: killed by the hard time limit ({timeout} s, "
                                       "QWEN3B_TASK_TIME_LIMIT_S)")
        super().on_timeout(soft, timeout)

    def on_failure(self, exc_info, send_failed_event=True, return_ok=False):
        exc = getattr(exc_info.exception, "exc", exc_info.exception)  # unwrap billiard's ExceptionWithTraceback
        if isinstance(exc, WorkerLostError):
            note_requeued(self.kwargs, None)
        super().on_failure(exc_info, send_failed_event=send_failed_event, return_ok=return_ok)


def register_tasks(app: Celery, pool: str) -> None:
    for task_name in keys.SHARD_TASKS.values():
        app.task(name=task_name, bind=True, acks_late=True, max_retries=None, Request=ShardRequest)(run_shard_task)
    # The model loads where the tasks run: the pool child (the main process never touches the
    # device: CUDA cannot be initialised again in a forked child), or the one process of solo.
    (signals.worker_process_init if pool == "prefork" else signals.worker_init).connect(boot, weak=False)


def boot(**_) -> None:
    global _context
    _context = boot_shard_worker(WorkerSpec.from_env())


def run_shard_task(self, **message):
    drop_workflow(self.request)
    try:
        return handle_message(_context, message)
    except RetryShard as exc:
        # At once: the runner waited before giving the shard up (a message's countdown is ignored)
        raise self.retry(countdown=0, exc=exc)


@functools.cache
def main_process_redis() -> redis.Redis:
    return redis.Redis.from_url(load_settings().broker_url)


def note_requeued(kwargs, reason: str | None) -> None:
    if not isinstance(kwargs, dict):
        return
    job, shard, ordinal = kwargs.get("job_id"), kwargs.get("shard_id"), kwargs.get("ordinal")
    if not (isinstance(job, str) and JOB_NAME.match(job) and isinstance(shard, str) and SHARD_ID.match(shard)
            and type(ordinal) is int and 0 <= ordinal < MAX_ORDINAL):
        return
    try:
        client = main_process_redis()
        client.hset(keys.job_queued(job), shard, f"{time.time()} {ordinal}")
        if reason:
            dispatch.note_error(client, job, shard, reason)
    except redis.RedisError:
        pass  # the reconciler publishes it again instead
