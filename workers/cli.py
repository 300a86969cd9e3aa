"""`workers start`: one worker process per device, consuming only its model's queue."""

import os

# SIGTERM (a deploy, `docker stop`) must requeue the running shard within seconds, not run it to
# the end or leave it to the visibility timeout: remapped to SIGQUIT, Celery does a soft shutdown
# (worker_soft_shutdown_timeout) and then a cold one that restores unacked messages. billiard
# reads this when it is imported, so it is set before anything imports Celery.
os.environ.setdefault("REMAP_SIGTERM", "SIGQUIT")

import json  # noqa: E402
import socket  # noqa: E402
from pathlib import Path  # noqa: E402

import redis  # noqa: E402
import typer  # noqa: E402

from common import defaults, keys  # noqa: E402
from common.celery_app import make_app  # noqa: E402
from common.broker import check_eviction_policy, redact_url, redis_client, wait_for_broker  # noqa: E402
from common.cluster_settings import register_or_check  # noqa: E402
from common.errors import ConfigError, Qwen3BatchError  # noqa: E402
from common.model_identity import model_ref  # noqa: E402
from common.settings import WORKER_SPEC_ENV, load_settings, parse_seqlens  # noqa: E402
from workers.device import parse_device  # noqa: E402
from workers.engines.base import EngineSpec  # noqa: E402
from workers.eval.cli import app as eval_app  # noqa: E402
from workers.perf.cli import bench  # noqa: E402

app = typer.Typer(help="Run embedding and rerank workers, one per device.", no_args_is_help=True,
                  pretty_exceptions_enable=False)


@app.callback()
def cli():
    """Workers: one process per device (cpu, cuda:N, vacc:N)."""


@app.command()
def start(
    model: str = typer.Option(None, help="checkpoint folder or hub id (not with --compile)"),
    task: str = typer.Option("embed", help="embed | rerank"),
    device: str = typer.Option(defaults.DEFAULT_DEVICE, help="cpu | cuda:N | vacc:N"),
    dtype: str = typer.Option(defaults.DEFAULT_DTYPE, help="fp32 | bf16 | fp16 (torch); fp32 | fp16 | int8 (onnx)"),
    backend: str = typer.Option(defaults.DEFAULT_BACKEND, help="torch | onnx | vacc (compiled: see producer compile)"),
    seqlens: str = typer.Option(",".join(map(str, defaults.DEFAULT_SEQLENS)), help="default length buckets"),
    name: str = typer.Option("", help="worker name; default <task>-<device>@<host>"),
    pool: str = typer.Option("prefork", help="prefork (time limits enforced) or solo"),
    loglevel: str = typer.Option("INFO"),
    compile_: bool = typer.Option(False, "--compile", help="a compile worker: consume the compile queue "
                                                           "(--device: where artifacts are validated)"),
):
    """Start a worker pinned to one device. It loads its model once, in the process that uses it."""
    try:
        dev = parse_device(device)
        settings = load_settings()
        if compile_:
            worker_name = name or f"compile-{str(dev).replace(':', '')}@{socket.gethostname()}"
            describe_compile_worker(worker_name, dev)
            queue = keys.COMPILE_QUEUE
        else:
            if not model:
                raise ConfigError("--model is required (or --compile for a compile worker)")
            lengths = parse_seqlens(seqlens)
            ref = model_ref(model)
            worker_name = name or f"{task}-{str(dev).replace(':', '')}@{socket.gethostname()}"
            queue = keys.shard_queue(task, ref.tag, dtype, backend)
            engine = EngineSpec(model=ref.source, task=task, backend=backend, dtype=dtype, device=str(dev),
                                seqlens=lengths)
            check_artifacts(engine)
            check_output_root(settings)
            describe_worker(worker_name, engine, queue)
    except Qwen3BatchError as exc:
        typer.echo(f"error: {exc}", err=True)  # plain: a log line, not a boxed usage message
        raise typer.Exit(2) from exc
    if dev.kind == "cuda":
        # Pin before any CUDA initialisation: the child sees exactly one card, as cuda:0.
        os.environ["CUDA_VISIBLE_DEVICES"] = str(dev.index)
        spec = json.loads(os.environ[WORKER_SPEC_ENV])
        spec["engine"]["device"] = "cuda:0"
        os.environ[WORKER_SPEC_ENV] = json.dumps(spec)
    join_cluster(settings, worker_name)
    celery = make_app(settings, queues=[queue, keys.worker_queue(worker_name)])
    from workers.tasks import register_compile_task, register_tasks

    (register_compile_task if compile_ else register_tasks)(celery)
    typer.echo(f"worker {worker_name}: queue {queue}, broker {redact_url(settings.broker_url)}")
    typer.echo(describe_roots(settings))
    celery.worker_main(["worker", "-n", worker_name, "-c", "1", "-P", pool, "-l", loglevel,
                        "--without-gossip", "--without-mingle", "-Q", f"{queue},{keys.worker_queue(worker_name)}"])


def describe_worker(worker_name: str, engine: EngineSpec, queue: str) -> None:
    """What the pool child loads (it reads this from the environment) and what the heartbeat shows."""
    os.environ[WORKER_SPEC_ENV] = json.dumps({
        "name": worker_name,
        "engine": {"model": engine.model, "task": engine.task, "backend": engine.backend, "dtype": engine.dtype,
                   "device": engine.device, "seqlens": list(engine.seqlens)},
        "public": {"device": engine.device, "model": engine.model, "task": engine.task, "dtype": engine.dtype,
                   "backend": engine.backend, "queue": queue},
    })


def describe_compile_worker(worker_name: str, dev) -> None:
    os.environ[WORKER_SPEC_ENV] = json.dumps({
        "name": worker_name, "engine": {"device": str(dev)},
        "public": {"device": str(dev), "model": "-", "task": "compile", "dtype": "-", "backend": "-",
                   "queue": keys.COMPILE_QUEUE},
    })


def check_artifacts(engine: EngineSpec) -> None:
    """A compiled backend without artifacts fails here, at start, naming the compile command
    (not in the pool child, where Celery would restart it over and over)."""
    from workers.engines.fixed_shape import find_artifacts
    from workers.engines.registry import COMPILED_BACKENDS

    if engine.backend in COMPILED_BACKENDS:
        find_artifacts(engine)


def check_output_root(settings) -> None:
    """The output root must exist and support hard links (commits are hard links): refused here, once,
    rather than on every shard."""
    from common.io.store import probe_links

    root = Path(settings.worker_output_root)
    if not root.is_dir():
        raise ConfigError(f"QWEN3B_OUTPUT_ROOT={settings.output_root}: no such folder (mount the shared output "
                          "store there, or set QWEN3B_OUTPUT_ROOT to where it is mounted)")
    probe_links(root)


def describe_roots(settings) -> str:
    """What a message can make this worker read and write: said at start, since the defaults are narrow."""
    out = settings.worker_output_root + ("" if settings.output_root else " (QWEN3B_OUTPUT_ROOT unset: the folder "
                                                                         "this worker started in)")
    ins = ", ".join(settings.worker_input_roots) + ("" if settings.input_roots else " (QWEN3B_INPUT_ROOTS unset: "
                                                                                  "the folder this worker started in)")
    return f"writes outputs only under {out}; reads inputs only under {ins}"


def join_cluster(settings, worker_name: str) -> None:
    """Wait for the broker, check that it never evicts, then register this worker's reliability
    settings or check them against the cluster's. A refused password, a rejected certificate, an
    evicting Redis or a differing setting ends the process with the reason, before Celery starts
    (which would retry a refused password forever)."""
    try:
        client = wait_for_broker(settings, lambda message: typer.echo(message, err=True))
        check_eviction_policy(client, settings)
        register_or_check(client, settings, worker_name)
    except Qwen3BatchError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc


@app.command()
def health(
    name: str = typer.Option(..., help="the worker's name (its --name)"),
    max_age_s: int = typer.Option(defaults.WORKER_HEALTHY_WITHIN_S, help="the last heartbeat must be this recent"),
):
    """Exit 0 when worker NAME sent a heartbeat in the last MAX_AGE_S seconds, else 1 (a container healthcheck)."""
    try:
        settings = load_settings()
        client = redis_client(settings)
        # The age comes from the key's remaining TTL, Redis's clock: no skew between hosts.
        ttl_s, raw = client.ttl(keys.worker_heartbeat(name)), client.get(keys.worker_heartbeat(name))
    except (Qwen3BatchError, redis.RedisError) as exc:
        typer.echo(f"unhealthy: cannot read {name}'s heartbeat ({exc})", err=True)
        raise typer.Exit(2) from exc
    age_s = settings.heartbeat_ttl_s - ttl_s
    if raw is None or ttl_s < 0 or age_s > max_age_s:
        typer.echo(f"unhealthy: no heartbeat from {name} in the last {max_age_s}s (still loading its model, "
                   "stopped, or cut off from Redis)", err=True)
        raise typer.Exit(1)
    beat = json.loads(raw)
    typer.echo(f"healthy: {name} on {beat.get('device')}, beat {age_s}s ago, shard {beat.get('current_shard') or '-'}, "
               f"{beat.get('rows_per_s')} rows/s")


app.add_typer(eval_app, name="eval")
app.command("bench")(bench)


@app.command("build-model")
def build_model(
    task: str = typer.Option("embed", help="embed | rerank"),
    shape: str = typer.Option("tiny", help="tiny (tests, demo) | 0.6b (the real shape, for benchmarks)"),
    out: str = typer.Option(".cache/models", help="parent folder; the model goes in a subfolder named after it"),
    seed: int = typer.Option(defaults.TINY_MODEL_SEED),
):
    """Build a RANDOM-WEIGHT Qwen3 checkpoint with the real Qwen vocabulary (offline)."""
    from workers.models.random_init import ensure_random_model

    typer.echo(ensure_random_model(out, task, shape, seed))


def main():
    app()


if __name__ == "__main__":
    main()
