"""Thin Celery tasks: decode, delegate to runner.handle_message, map RetryShard to a retry."""

import json
import logging
import os

import redis
from celery import Celery, signals

from common import keys
from common.settings import load_settings
from workers.runner import RetryShard, WorkerContext, handle_message, start_heartbeat

log = logging.getLogger(__name__)
WORKER_SPEC_ENV = "QWEN3B_WORKER_SPEC"  # set by `workers start`, read in the pool child
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
