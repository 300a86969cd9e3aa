"""Thin Celery tasks: decode, delegate to runner.handle_message, map RetryShard to a retry."""

import json
import logging
import os

import pydantic
import redis
from celery import Celery, signals
from celery.exceptions import TimeLimitExceeded

from common import keys
from common.errors import RefusedMessage
from common.paths import check_within
from common.schemas import HUB_ID, JOB_NAME, SHARD_ID
from common.settings import ENV_PREFIX, WORKER_SPEC_ENV, load_settings
from workers.runner import RetryShard, WorkerContext, handle_message, start_heartbeat

log = logging.getLogger(__name__)
_context: WorkerContext | None = None


def register_tasks(app: Celery) -> None:
    for task_name in keys.SHARD_TASKS.values():
        app.task(name=task_name, bind=True, acks_late=True, max_retries=None)(run_shard_task)
    signals.worker_process_init.connect(load_engine_in_child, weak=False)
    signals.task_failure.connect(record_time_limit, weak=False)


def run_shard_task(self, **message):
    try:
        return handle_message(context(), message)
    except RetryShard as exc:
        raise self.retry(countdown=context().settings.retry_countdown_s, exc=exc)


def context() -> WorkerContext:
    if _context is None:  # solo pool: no child process, load on first use
        load_engine_in_child()
    return _context


def load_engine_in_child(**_):
    """Runs in the pool child: the parent never touches the device (CUDA cannot re-initialise
    in a forked child), and a child that is replaced loads the model again."""
    global _context
    from workers.engines.base import EngineSpec
    from workers.engines.registry import create_engine

    described = json.loads(os.environ[WORKER_SPEC_ENV])
    settings = load_settings()
    spec = EngineSpec(**{k: tuple(v) if k == "seqlens" else v for k, v in described["engine"].items()})
    engine = create_engine(spec)
    warm_up(engine)
    _context = WorkerContext(name=described["name"], engine=engine, settings=settings,
                             redis=redis.Redis.from_url(settings.broker_url), description=described["public"])
    start_heartbeat(_context)
    _context.reconciler = start_reconciler(_context)
    log.info("worker %s ready: %s", described["name"], described["public"])


def start_reconciler(ctx: WorkerContext):
    """Every worker runs the reconciler for the jobs in its output root (common/reconcile.py)."""
    from common import dispatch
    from common.celery_app import make_app
    from common.paths import is_within
    from common.reconcile import Reconciler

    app = make_app(ctx.settings)
    reconciler = Reconciler(ctx.redis, lambda plan, output, ids: dispatch.publish_shards(app, ctx.redis, plan, output, ids),
                            accepts=lambda output: is_within(output, ctx.output_root),
                            interval_s=ctx.settings.reconcile_interval_s)
    reconciler.start()
    return reconciler


def record_time_limit(sender=None, task_id=None, exception=None, kwargs=None, **_):
    """In the worker's main process, when the hard time limit killed a shard's pool child: note why,
    so that the quarantine record of a shard that always hits it says so (the child cannot)."""
    if not isinstance(exception, TimeLimitExceeded) or not isinstance(kwargs, dict):
        return
    job, shard = kwargs.get("job_id"), kwargs.get("shard_id")
    if not (isinstance(job, str) and JOB_NAME.match(job) and isinstance(shard, str) and SHARD_ID.match(shard)):
        return
    settings = load_settings()
    try:
        redis.Redis.from_url(settings.broker_url).hset(
            keys.job_errors(job), shard, f"TimeLimitExceeded: killed by the hard time limit "
                                         f"({settings.task_time_limit_s} s, QWEN3B_TASK_TIME_LIMIT_S)")
    except redis.RedisError:
        pass


def warm_up(engine) -> None:
    """One tiny batch through the engine and the Parquet writer before the first heartbeat, so the
    first real shard does not pay for lazy imports (pyarrow pulls in pandas on first use)."""
    import numpy as np

    from common.io import output

    if engine.spec.task == "embed":
        vectors = engine.embed(["warm up"]).vectors
        schema = output.result_schema("embed", "int64", vectors.shape[1], "float32")
    else:
        vectors = engine.rerank(["warm up"], ["warm up"]).scores
        schema = output.result_schema("rerank", "int64", 0, "float32")
    output.result_table(schema, [0], vectors, np.ones(1, np.int32), np.zeros(1, bool))


# --- the compile queue ------------------------------------------------------------------------------
def register_compile_task(app: Celery) -> None:
    app.task(name=keys.TASK_COMPILE, bind=True, acks_late=True)(run_compile_task)
    signals.worker_process_init.connect(start_compile_child, weak=False)


def run_compile_task(self, **message):
    from common.artifacts import ArtifactStore
    from common.compile_status import write_status
    from common.schemas import CompileRequest
    from workers.compile.job import run_delivery

    ctx = compile_context()
    try:
        request = CompileRequest.model_validate(message)
    except pydantic.ValidationError as exc:
        log.error("refused a compile message: %s", exc)  # not ours, or crafted: dropped, never run
        return "refused"
    artifact_id = request.key.artifact_id

    def report(state: str, **fields) -> None:
        write_status(ctx.redis, artifact_id, request.job, state, **fields)
        log.info("compile %s: %s %s", artifact_id, state, fields.get("reason", ""))

    if not HUB_ID.match(request.model.source):
        try:
            check_within(request.model.source, ctx.input_roots, "model", f"{ENV_PREFIX}INPUT_ROOTS")
        except RefusedMessage as exc:
            report("failed", reason=f"refused: {exc}")
            return "refused"
    ctx.current_shard = artifact_id
    try:
        return run_delivery(request, ArtifactStore(ctx.settings.artifact_store), ctx.redis, report,
                            ctx.settings.max_attempts, validate_device=ctx.description["device"])["state"]
    finally:
        ctx.current_shard = None


def compile_context() -> WorkerContext:
    if _context is None:
        start_compile_child()
    return _context


def start_compile_child(**_):
    """A compile worker loads no model up front (each job names its own); it beats like any worker."""
    global _context
    described = json.loads(os.environ[WORKER_SPEC_ENV])
    settings = load_settings()
    _context = WorkerContext(name=described["name"], engine=None, settings=settings,
                             redis=redis.Redis.from_url(settings.broker_url), description=described["public"])
    start_heartbeat(_context)
