"""Enqueue and follow jobs through the broker: the producer's Redis operations, in one place."""

import os
import sys
from collections.abc import Callable

import redis

from common import dispatch, heartbeats, job_registry, keys
from common.broker import BrokerUnreachableError, check_broker, redis_client
from common.celery_app import make_app
from common.errors import Qwen3BatchError
from common.io import fs
from common.io.manifest import save_manifest
from common.io.plans import Plan
from common.io.store import OutputStore
from common.jobstate import Event, JobState, read_state
from common.paths import is_within
from common.reconcile import fold_log, recent_events, reconcile_job
from common.settings import Settings


def connect(settings: Settings) -> redis.Redis:
    """A checked connection; the errors say what to fix (see common.broker), plus --local."""
    client = redis_client(settings)
    try:
        check_broker(client, settings)
    except BrokerUnreachableError as exc:
        raise BrokerUnreachableError(f"{exc}, or run the job in-process with --local") from exc
    return client


def publisher(settings: Settings, client: redis.Redis,
              on_progress: Callable[[int], None] = lambda n: None) -> dispatch.Publisher:
    return dispatch.Publisher(make_app(settings), client, on_progress)


def enqueue(settings: Settings, client: redis.Redis, store: OutputStore, plan: Plan,
            on_progress: Callable[[int], None] = lambda n: None) -> int:
    """Register the job, set its window up from the store, and publish what nothing will run: the
    first window of a new job; on a resubmit or resume, what a crash or a Redis loss left without a
    message, then the window topped up (a resume never doubles the queue). Returns the messages sent."""
    dispatch.register_job(client, plan, store.url)
    register_beyond_redis(settings, client, plan, store.url)
    client.delete(keys.job_cancelled(plan.job_id))
    outcome = reconcile_job(client, publisher(settings, client, on_progress), store, plan, grace_s=0)
    return len(outcome.republished) + outcome.topped_up


def warning_line(line: str) -> None:
    print(f"warning: {line}", file=sys.stderr)


def register_beyond_redis(settings: Settings, client: redis.Redis, plan: Plan, output: str,
                          warn: Callable[[str], None] = warning_line) -> list[str]:
    """Record the job in the registry (common/job_registry.py) of every output root whose workers'
    reconcilers could finish it after Redis loses its data: this process's QWEN3B_OUTPUT_ROOT, and the
    root of each live worker that holds the output (those of the job's queue first; any worker's
    reconciler publishes a job of its root). Until a worker takes one of its messages, these records
    are all that remembers the job outside Redis. Costs a Redis scan of the heartbeats and one
    existence check per distinct root: per worker, not per shard. Returns the roots."""
    workers = heartbeats.live_workers(client)
    workers.sort(key=lambda w: w.get("queue") != plan.queue)
    roots = [settings.output_root] if settings.output_root and is_within(output, settings.output_root) else []
    for w in workers:
        root = w.get("output_root")
        if isinstance(root, str) and root and root not in roots and is_within(output, root):
            roots.append(root)
    if not roots:
        # Nobody's root is known: no QWEN3B_OUTPUT_ROOT here, no live worker (yet) that holds the
        # output. Best effort: the output's parent folder, since the usual layout puts each job's
        # output directly in the workers' root (QWEN3B_OUTPUT_ROOT=/data/out and --out
        # /data/out/wiki in the compose file; a bucket prefix of jobs likewise). Workers started
        # later with that root find the job there; the record is a few bytes, and such a worker
        # removes it when the job ends. Under any other root it is never read, hence the warning.
        parent = parent_of(output)
        where = f"only under {parent}" if parent else "nowhere"
        warn(f"job {plan.job_id} is recorded outside Redis {where} (no QWEN3B_OUTPUT_ROOT here, and no live "
             f"worker whose output root holds {output}): if Redis loses its data before a worker "
             f"takes one of its shards, workers with another output root never find it again and it waits for "
             f"`producer resume {output}`. Set QWEN3B_OUTPUT_ROOT to the workers' output root to avoid this")
        roots = [parent] if parent else []
    for root in roots:
        try:
            job_registry.register(root, plan.job_id, output)
        except (OSError, Qwen3BatchError) as exc:
            warn(f"job {plan.job_id} could not be recorded under {root} ({exc}): if Redis loses its data before a "
                 f"worker takes one of its shards, `producer resume {output}` may be needed")
    return roots


def parent_of(output: str) -> str:
    """The folder (or bucket prefix) that holds the output; "" for a bucket's top or a disk's root."""
    url = fs.normalize(output)
    if fs.is_object_url(url):
        bucket_and_key = url.split("://", 1)[1]
        return url.rsplit("/", 1)[0] if "/" in bucket_and_key else ""
    parent = os.path.dirname(url)
    return parent if parent != url else ""


def retry_quarantined(client: redis.Redis, store: OutputStore, plan: Plan) -> list[str]:
    """Give quarantined shards another round of attempts: their records, their done bits and their
    counters go, and the manifest counts them pending again (the next pass finds them below the
    cursor with no record, and publishes them)."""
    for _ in range(5):
        manifest = fold_log(client, store, plan)
        ordinals = manifest.quarantined_ordinals()
        if not ordinals:
            return []
        shards = [plan.shard_at(o) for o in ordinals]
        ids = [s.shard_id for s in shards]
        store.clear_quarantine(ids)
        manifest.clear_quarantine(ordinals, [s.rows for s in shards], ids)
        if save_manifest(store, manifest):
            break
    with client.pipeline(transaction=True) as pipe:
        pipe.hdel(keys.job_attempts(plan.job_id), *ids)
        pipe.hdel(keys.job_errors(plan.job_id), *ids)
        for ordinal in ordinals:
            pipe.setbit(keys.job_done(plan.job_id), ordinal, 0)
        pipe.execute()
    store.drop_success()
    return ids


def reconcile(settings: Settings, client: redis.Redis, store: OutputStore, plan: Plan) -> list[int]:
    """One reconciler pass for a followed job (under the job's lock, like the workers' passes)."""
    outcome = reconcile_job(client, publisher(settings, client), store, plan, lock_s=settings.reconcile_interval_s)
    return outcome.republished


def state(client: redis.Redis | None, store: OutputStore, plan: Plan, known=None) -> JobState:
    """The job's state: the store's, plus the commits Redis announced that are not folded yet."""
    recent: list[Event] = []
    if client is not None:
        try:
            recent = recent_events(client, plan.job_id)
        except redis.RedisError:
            pass
    return read_state(store, plan, recent, known)


def refusals(client: redis.Redis, plan: Plan) -> dict[str, str]:
    """shard -> why a worker refused its message (an output outside its root, ...)."""
    return {k.decode(): v.decode() for k, v in client.hgetall(keys.job_refused(plan.job_id)).items()}


def list_jobs(client: redis.Redis) -> dict[str, str]:
    """job id -> output, of every job submitted through this broker (since Redis last lost its data)."""
    return dispatch.list_jobs(client)


def live_workers(client: redis.Redis) -> list[dict]:
    return heartbeats.live_workers(client)


def check_workers_accept(client: redis.Redis, plan: Plan, output: str) -> None:
    """Fail before enqueueing when the live workers of the job's queue would refuse its shards:
    each worker writes only under its output root and reads only under its input roots."""
    serving = [w for w in live_workers(client) if w.get("queue") == plan.queue and "output_root" in w]
    if not serving:
        return  # nobody to ask yet; `--wait` reports refusals if they come
    inputs = [f.path for f in plan.iter_inputs()]
    accepting = [w for w in serving if is_within(output, w["output_root"])
                 and all(any(is_within(p, r) for r in w.get("input_roots", ())) for p in inputs)]
    if accepting:
        return
    w = serving[0]
    raise Qwen3BatchError(
        f"the {len(serving)} live workers of queue {plan.queue} would refuse this job: they write only under "
        f"{w['output_root']} (QWEN3B_OUTPUT_ROOT) and read only under {', '.join(w.get('input_roots', ()))} "
        f"(QWEN3B_INPUT_ROOTS), and this job writes {output} and reads {', '.join(inputs[:3])}. Move the output "
        "and inputs under those roots, or start the workers with roots that hold them (see docs/security.md)")


def cancel(client: redis.Redis | None, store: OutputStore, plan: Plan) -> None:
    store.set_cancelled(True)
    if client is not None:
        client.set(keys.job_cancelled(plan.job_id), 1)


def find_output(client: redis.Redis | None, job: str) -> OutputStore:
    """JOB is an output folder, or a job id registered in Redis at submit time."""
    store = OutputStore(job)
    if store.has_plan():
        return store
    if client is not None:
        output = dispatch.job_output(client, job)
        if output:
            return OutputStore(output)
    raise Qwen3BatchError(f"no job {job!r}: pass its output folder (Redis may have lost its job index)")
