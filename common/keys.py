"""Every queue name and Redis key of the project, and the helpers that build them."""

import re

KEY_PREFIX = "q3b"

# Celery task names: fixed strings.
TASK_EMBED_SHARD = "embed.shard"
TASK_RERANK_SHARD = "rerank.shard"
TASK_COMPILE = "compile.model"
SHARD_TASKS = {"embed": TASK_EMBED_SHARD, "rerank": TASK_RERANK_SHARD}

COMPILE_QUEUE = "compile"

_UNSAFE = re.compile(r"[^a-z0-9_-]+")


def model_tag(model_name: str, identity: str) -> str:
    """A readable, collision-safe tag: the folder or hub name plus 8 hex digits of its identity."""
    name = _UNSAFE.sub("-", model_name.rstrip("/").rsplit("/", 1)[-1].lower()).strip("-")[:40] or "model"
    return f"{name}-{identity[:8]}"


def shard_queue(task: str, model_identity: str, dtype: str, backend: str) -> str:
    """A job's model (by content: a copy in another folder is the same model), task, dtype and
    backend decide its queue; a worker consumes only the queue of what it has loaded, so a shard
    never runs on a worker with other settings."""
    return f"{task}.{model_identity[:16]}.{dtype}.{backend}"


def worker_queue(worker_name: str) -> str:
    return f"worker.{worker_name}"


# A job's delivery state. Every key is bounded by the window of messages in flight or the number
# of workers, except `done`, one bit per shard (62 KB for 5e5 shards): nothing grows with the rows.
def job_attempts(job_id: str) -> str:
    return f"{KEY_PREFIX}:job:{job_id}:attempts"  # hash shard -> deliveries started (dropped at its commit)


def job_errors(job_id: str) -> str:
    return f"{KEY_PREFIX}:job:{job_id}:errors"  # hash shard -> last error


def job_cancelled(job_id: str) -> str:
    return f"{KEY_PREFIX}:job:{job_id}:cancelled"


def job_queued(job_id: str) -> str:
    return f"{KEY_PREFIX}:job:{job_id}:queued"  # hash shard -> "<published at> <ordinal>": its message waits


def job_running(job_id: str) -> str:
    return f"{KEY_PREFIX}:job:{job_id}:running"  # hash shard -> JSON {worker, since, ordinal}: taken, not finished


def job_cursor(job_id: str) -> str:
    # every shard below this ordinal has been published at least once since Redis last lost its data;
    # absent until the window is set up from the store (common/window.py)
    return f"{KEY_PREFIX}:job:{job_id}:cursor"


def job_done(job_id: str) -> str:
    return f"{KEY_PREFIX}:job:{job_id}:done"  # bitmap by ordinal: committed or quarantined (a hint; the store decides)


def job_log(job_id: str) -> str:
    # list of "c|q <ordinal> <rows in> <rows out> <rows rejected> <tokens>": commits and quarantines
    # not yet folded into the store's manifest (common/jobstate.fold), and what live progress adds
    return f"{KEY_PREFIX}:job:{job_id}:log"


def job_window_lock(job_id: str) -> str:
    return f"{KEY_PREFIX}:job:{job_id}:topping-up"  # one process tops the job's window up at a time


def job_refused(job_id: str) -> str:
    return f"{KEY_PREFIX}:job:{job_id}:refused"  # hash shard -> why a worker refused its message


def job_events(job_id: str) -> str:
    # pub/sub channel: a shard id each time a worker commits or quarantines one, so that a
    # follower (`--wait`) sees the job end when it does, not at its next poll
    return f"{KEY_PREFIX}:job:{job_id}:events"


def job_reconcile_lock(job_id: str) -> str:
    return f"{KEY_PREFIX}:job:{job_id}:reconciling"  # one reconciler pass per job at a time, cluster-wide


def job_keys(job_id: str) -> tuple[str, ...]:
    """Everything Redis holds about one job's delivery, dropped once the job is finished."""
    return (job_attempts(job_id), job_errors(job_id), job_queued(job_id), job_running(job_id),
            job_refused(job_id), job_reconcile_lock(job_id), job_cursor(job_id), job_done(job_id), job_log(job_id),
            job_window_lock(job_id))


def jobs_index() -> str:
    return f"{KEY_PREFIX}:jobs"  # hash job id -> JSON {output, queue, submitted_at}


def active_jobs() -> str:
    return f"{KEY_PREFIX}:jobs:active"  # set of job ids the reconciler watches until they finish


def queue_lists(queue: str) -> tuple[str, ...]:
    """The Redis lists kombu keeps a queue's waiting messages in: the queue's own name, plus one per
    priority step (kombu's default steps 0, 3, 6, 9, joined by its separator)."""
    return (queue, *(f"{queue}\x06\x16{step}" for step in (3, 6, 9)))


def worker_heartbeat(worker_name: str) -> str:
    return f"{KEY_PREFIX}:worker:{worker_name}"


def worker_heartbeat_pattern() -> str:
    return f"{KEY_PREFIX}:worker:*"


def compile_status(artifact_id: str) -> str:
    return f"{KEY_PREFIX}:compile:{artifact_id}"  # JSON: queued | running | published | exists | failed


def compile_attempts(job: str) -> str:
    return f"{KEY_PREFIX}:compile:{job}:attempts"  # hash artifact id -> deliveries started


def cluster_settings() -> str:
    return f"{KEY_PREFIX}:cluster-settings"
