"""What a worker process does before its first message: load the engine, warm it up, start the
heartbeat and the reconciler. Runs in the pool child (prefork) or the main process (solo).

A child that cannot load its model must not leave a worker that takes every message and fails
each one: it writes why to the spec's status file, asks the main process to shut down (SIGTERM:
a cold shutdown that requeues nothing, since nothing was taken), and exits. `workers start`
then prints the reason and exits non-zero.
"""

import logging
import os
import signal
import time

import redis

from common import dispatch
from common.celery_app import make_app
from common.reconcile import Reconciler
from common.settings import load_settings
from workers.runner import WorkerContext, start_heartbeat
from workers.spec import WorkerSpec

log = logging.getLogger(__name__)
EXIT_MODEL_NOT_LOADED = 3


def boot_shard_worker(spec: WorkerSpec) -> WorkerContext:
    from workers.engines.registry import create_engine

    settings = load_settings()
    started = time.perf_counter()
    try:
        engine = create_engine(spec.engine_spec())
        warm_up(engine)
    except Exception as exc:  # whatever stops the model from loading: the worker must not start
        give_up(spec, f"{spec.name} could not load {spec.model} ({spec.task}, {spec.dtype}, {spec.backend}, "
                      f"{spec.device}): {type(exc).__name__}: {exc}")
    ctx = WorkerContext(name=spec.name, engine=engine, settings=settings,
                        redis=redis.Redis.from_url(settings.broker_url), description=spec.public())
    start_heartbeat(ctx)
    ctx.reconciler = start_reconciler(ctx)
    log.info("worker %s ready: model %s loaded in %.1f s; taking shards from %s", spec.name, spec.model,
             time.perf_counter() - started, spec.queue)
    return ctx


def boot_compile_worker(spec: WorkerSpec) -> WorkerContext:
    """A compile worker loads no model up front (each job names its own); it beats like any worker."""
    settings = load_settings()
    ctx = WorkerContext(name=spec.name, engine=None, settings=settings,
                        redis=redis.Redis.from_url(settings.broker_url), description=spec.public())
    start_heartbeat(ctx)
    log.info("compile worker %s ready", spec.name)
    return ctx


def start_reconciler(ctx: WorkerContext) -> Reconciler:
    """Every worker runs the reconciler for the jobs in its output root (common/reconcile.py), and
    tops up the windows of the jobs it works on with the same publisher."""
    ctx.publisher = dispatch.Publisher(make_app(ctx.settings), ctx.redis)
    reconciler = Reconciler(ctx.redis, ctx.publisher, root=ctx.output_root, interval_s=ctx.settings.reconcile_interval_s)
    reconciler.start()
    return reconciler


def warm_up(engine) -> None:
    """One tiny batch through the engine and the Parquet writer before the first heartbeat, so the
    first real shard does not pay for lazy imports and first calls (pyarrow's Parquet writer and
    compute kernels)."""
    import numpy as np

    from common.cli_runner import skip_pandas_probe
    from common.io import output

    skip_pandas_probe()

    if engine.spec.task == "embed":
        vectors = engine.embed(["warm up"]).vectors
        schema = output.result_schema("embed", "int64", vectors.shape[1], "float32")
    else:
        vectors = engine.rerank(["warm up"], ["warm up"]).scores
        schema = output.result_schema("rerank", "int64", 0, "float32")
    output.result_table(schema, [0], vectors, np.ones(1, np.int32), np.zeros(1, bool), bytes(16))


def give_up(spec: WorkerSpec, reason: str) -> None:
    log.error(reason)
    if spec.status_file:
        with open(spec.status_file, "w") as f:
            f.write(reason)
    if os.getppid() > 1 and os.environ.get("QWEN3B_POOL") == "prefork":
        os.kill(os.getppid(), signal.SIGTERM)  # the main process shuts down; it reads the status file
        os._exit(EXIT_MODEL_NOT_LOADED)
    raise SystemExit(EXIT_MODEL_NOT_LOADED)
