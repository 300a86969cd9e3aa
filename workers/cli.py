"""`workers start`: one worker process per device, consuming only its model's queue."""

import os

# SIGTERM (a deploy, `docker stop`) must requeue the running shard within seconds, not run it to
# the end or leave it to the visibility timeout: remapped to SIGQUIT, Celery does a soft shutdown
# (worker_soft_shutdown_timeout) and then a cold one that restores unacked messages. billiard
# reads this when it is imported, so it is set before anything imports Celery.
os.environ.setdefault("REMAP_SIGTERM", "SIGQUIT")

import json  # noqa: E402
import socket  # noqa: E402

import typer  # noqa: E402

from common import defaults, keys  # noqa: E402
from common.celery_app import make_app  # noqa: E402
from common.errors import Qwen3BatchError  # noqa: E402
from common.model_identity import model_ref  # noqa: E402
from common.settings import load_settings, parse_seqlens  # noqa: E402
from workers.device import parse_device  # noqa: E402
from workers.eval.cli import app as eval_app  # noqa: E402
from workers.perf.cli import bench  # noqa: E402

app = typer.Typer(help="Run embedding and rerank workers, one per device.", no_args_is_help=True,
                  pretty_exceptions_enable=False)


@app.callback()
def cli():
    """Workers: one process per device (cpu, cuda:N, vacc:N)."""


@app.command()
def start(
    model: str = typer.Option(..., help="checkpoint folder or hub id"),
    task: str = typer.Option("embed", help="embed | rerank"),
    device: str = typer.Option(defaults.DEFAULT_DEVICE, help="cpu | cuda:N | vacc:N"),
    dtype: str = typer.Option(defaults.DEFAULT_DTYPE, help="fp32 | bf16 | fp16"),
    backend: str = typer.Option(defaults.DEFAULT_BACKEND, help="torch (onnx and vacc: see the compile queue)"),
    seqlens: str = typer.Option(",".join(map(str, defaults.DEFAULT_SEQLENS)), help="default length buckets"),
    name: str = typer.Option("", help="worker name; default <task>-<device>@<host>"),
    pool: str = typer.Option("prefork", help="prefork (time limits enforced) or solo"),
    loglevel: str = typer.Option("INFO"),
):
    """Start a worker pinned to one device. It loads its model once, in the process that uses it."""
    try:
        dev = parse_device(device)
        lengths = parse_seqlens(seqlens)
        ref = model_ref(model)
        settings = load_settings()
    except Qwen3BatchError as exc:
        raise typer.BadParameter(str(exc)) from exc
    worker_name = name or f"{task}-{str(dev).replace(':', '')}@{socket.gethostname()}"
    queue = keys.shard_queue(task, ref.tag, dtype, backend)
    os.environ["QWEN3B_WORKER_SPEC"] = json.dumps({
        "name": worker_name,
        "engine": {"model": ref.source, "task": task, "backend": backend, "dtype": dtype, "device": str(dev),
                   "seqlens": list(lengths)},
        "public": {"device": str(dev), "model": ref.source, "task": task, "dtype": dtype, "backend": backend,
                   "queue": queue},
    })
    if dev.kind == "cuda":
        # Pin before any CUDA initialisation: the child sees exactly one card, as cuda:0.
        os.environ["CUDA_VISIBLE_DEVICES"] = str(dev.index)
        spec = json.loads(os.environ["QWEN3B_WORKER_SPEC"])
        spec["engine"]["device"] = "cuda:0"
        os.environ["QWEN3B_WORKER_SPEC"] = json.dumps(spec)
    celery = make_app(settings, queues=[queue, keys.worker_queue(worker_name)])
    from workers.tasks import register_tasks

    register_tasks(celery)
    typer.echo(f"worker {worker_name}: queue {queue}, broker {settings.broker_url}")
    celery.worker_main(["worker", "-n", worker_name, "-c", "1", "-P", pool, "-l", loglevel,
                        "--without-gossip", "--without-mingle", "-Q", f"{queue},{keys.worker_queue(worker_name)}"])


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
