"""Thin Celery tasks: decode, delegate to runner.handle_message, map RetryShard to a retry."""

import json
import logging
import os

import redis
from celery import Celery, signals

from common import keys
from common.settings import WORKER_SPEC_ENV, load_settings
from workers.runner import RetryShard, WorkerContext, handle_message, start_heartbeat

log = logging.getLogger(__name__)
_context: WorkerContext | None = None


def register_tasks(app: Celery) -> None:
    for task_name in keys.SHARD_TASKS.values():
        app.task(name=task_name, bind=True, acks_late=True, max_retries=None)(run_shard_task)
    signals.worker_process_init.connect(load_engine_in_child, weak=False)


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
    log.info("worker %s ready: %s", described["name"], described["public"])


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
    request = CompileRequest.model_validate(message)
    artifact_id = request.key.artifact_id

    def report(state: str, **fields) -> None:
        write_status(ctx.redis, artifact_id, request.job, state, **fields)
        log.info("compile %s: %s %s", artifact_id, state, fields.get("reason", ""))

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
