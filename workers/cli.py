"""`workers start`: one worker process per device, consuming only its model's queue."""

import os

# SIGTERM (a deploy, `docker stop`) must requeue the running shard within seconds, not run it to
# the end or leave it to the visibility timeout: remapped to SIGQUIT, Celery does a soft shutdown
# (worker_soft_shutdown_timeout) and then a cold one that restores unacked messages. billiard
# reads this when it is imported, so it is set before anything imports Celery.
os.environ.setdefault("REMAP_SIGTERM", "SIGQUIT")

import json  # noqa: E402
import logging  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import redis  # noqa: E402
import typer  # noqa: E402

from common import cli_runner, defaults, keys, options  # noqa: E402
from common.celery_app import make_app  # noqa: E402
from common.broker import check_eviction_policy, redact_url, redis_client, wait_for_broker  # noqa: E402
from common.cluster_settings import register_or_check  # noqa: E402
from common.errors import ConfigError, Qwen3BatchError  # noqa: E402
from common.model_identity import model_ref  # noqa: E402
from common.options import parse_seqlens  # noqa: E402
from common.settings import load_settings  # noqa: E402
from workers import identity  # noqa: E402
from workers.device import parse_device  # noqa: E402
from workers.engines.base import EngineSpec  # noqa: E402
from workers.eval.cli import app as eval_app  # noqa: E402
from workers.bench.cli import bench  # noqa: E402
from workers.spec import WorkerSpec  # noqa: E402

app = typer.Typer(help="Run embedding and rerank workers, one per device.", no_args_is_help=True, rich_markup_mode=None,
                  pretty_exceptions_enable=False)


@app.callback()
def cli():
    """Workers: one process per device (cpu, cuda:N, vacc:N)."""


@app.command()
def start(
    model: str = typer.Option(None, help="checkpoint folder or hub id (not with --compile)", metavar="TEXT"),
    task: str = typer.Option("embed", help="embed | rerank: the checkpoint must be of that kind", metavar="TEXT"),
    device: str = typer.Option(defaults.DEFAULT_DEVICE, help="cpu | cuda:N | vacc:N", metavar="TEXT"),
    dtype: str = typer.Option("auto", help="auto (fp32 on cpu, bf16 on cuda, fp16 on vacc, fp32 for onnx) | fp32 | "
                                           "bf16 | fp16 | int8 (onnx). Jobs must ask for the same (producer submit "
                                           "--dtype auto does)", metavar="TEXT"),
    backend: str = typer.Option(defaults.DEFAULT_BACKEND, help="torch | onnx | vacc (compiled: see producer compile) | "
                                                               "simulated (tests)", metavar="TEXT"),
    seqlens: str = typer.Option(",".join(map(str, defaults.DEFAULT_SEQLENS)), help="default length buckets", metavar="TEXT"),
    name: str = typer.Option("", help="worker name, refused while a live worker holds it; default "
                                      "<task>-<device>-<6 hex>@<host>, unique per process (pass one for a stable "
                                      "name: `workers health --name`, a container's healthcheck)", metavar="TEXT"),
    pool: str = typer.Option("prefork", help="prefork (time limits enforced) or solo", metavar="TEXT"),
    loglevel: str = typer.Option("INFO", metavar="TEXT"),
    compile_: bool = typer.Option(False, "--compile", help="a compile worker: consume the compile queue "
                                                           "(--device: where artifacts are validated)", metavar=""),
    torch_compile: str = typer.Option(defaults.DEFAULT_TORCH_COMPILE, help="off | inductor | cudagraphs (CUDA): "
                                      "torch.compile the model at start (torch backend; graphs cached across "
                                      "restarts); see docs/performance.md for when it pays", metavar="TEXT"),
):
    """Start a worker pinned to one device. It loads its model once, in the process that uses it;
    one that cannot load its model exits with the reason (code 3).

    Settings come from QWEN3B_* variables: QWEN3B_BROKER_URL above all, QWEN3B_OUTPUT_ROOT and
    QWEN3B_INPUT_ROOTS (where it may write and read), the time limits (.env.example lists them)."""
    try:
        check_pool_and_loglevel(pool, loglevel)
        dev = parse_device(device)
        settings = load_settings()
        spec = (compile_worker_spec(name, dev) if compile_
                else shard_worker_spec(model, task, dev, dtype, backend, seqlens, name, settings, torch_compile))
    except Qwen3BatchError as exc:
        typer.echo(f"error: {exc}", err=True)  # plain: a log line, not a boxed usage message
        raise typer.Exit(2) from exc
    if dev.kind == "cuda":
        # Pin before any CUDA initialisation: the child sees exactly one card, as cuda:0.
        os.environ["CUDA_VISIBLE_DEVICES"] = str(dev.index)
    spec = spec.model_copy(update={"name": join_cluster(settings, spec.name, spec.task, spec.device)})
    run_celery(settings, spec, pool, loglevel)


def not_ready_yet(record: logging.LogRecord) -> bool:
    """Celery logs "<name> ready." once it consumes, long before the pool child has loaded the model:
    say what it means; the worker's own "ready: model ... loaded" line is the readiness that counts."""
    if record.getMessage().endswith(" ready."):
        record.msg, record.args = "%s connected to the broker; loading the model (wait for 'ready: model ... loaded')", \
            record.args
    return True


def shard_worker_spec(model, task, dev, dtype, backend, seqlens, name, settings,
                      torch_compile: str = defaults.DEFAULT_TORCH_COMPILE) -> WorkerSpec:
    """Everything checked before Celery starts: the model (folder or hub id, of the task's kind),
    the options, the artifacts of a compiled backend, the output root."""
    from workers.engines.loading import inspect_model

    if not model:
        raise ConfigError("--model is required (or --compile for a compile worker)")
    options.check_task(task)
    options.check_backend(backend)
    dtype = options.check_dtype(default_dtype(dev, backend) if dtype == "auto" else dtype, backend)
    lengths = parse_seqlens(seqlens)
    options.check_torch_compile(torch_compile, backend, str(dev))
    options.check_int8_device(dtype, backend, str(dev))
    ref = model_ref(model)
    if backend != "simulated":
        check = inspect_model(ref.source, task, tokenizer=False)
        if check.warning:
            typer.echo(f"warning: {check.warning}", err=True)
    spec = WorkerSpec(name=name, kind="shard",
                      queue=keys.shard_queue(task, ref.identity, dtype, backend), device=str(dev),
                      engine_device="cuda:0" if dev.kind == "cuda" else str(dev), model=ref.source,
                      model_identity=ref.identity, task=task, backend=backend, dtype=dtype, seqlens=lengths,
                      torch_compile=torch_compile)
    check_artifacts(spec.engine_spec())
    check_output_root(settings)
    return spec


def compile_worker_spec(name, dev) -> WorkerSpec:
    return WorkerSpec(name=name, kind="compile",
                      queue=keys.COMPILE_QUEUE, device=str(dev))


def default_dtype(dev, backend: str) -> str:
    """--dtype auto: what fits the device (and producer submit --dtype auto asks the live workers)."""
    if backend in options.COMPILED_BACKENDS:
        return defaults.COMPILE_DTYPES[backend][0]
    return defaults.DEVICE_DTYPES[dev.kind]


POOLS = ("prefork", "solo")
LOGLEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def check_pool_and_loglevel(pool: str, loglevel: str) -> None:
    """Checked here, before the broker is waited for: Celery would only refuse them after it."""
    if pool not in POOLS:
        raise ConfigError(f"--pool {pool!r}: choose {' or '.join(POOLS)}")
    if loglevel.upper() not in LOGLEVELS:
        raise ConfigError(f"--loglevel {loglevel!r}: choose one of {', '.join(LOGLEVELS)}")


def run_celery(settings, spec: WorkerSpec, pool: str, loglevel: str) -> None:
    """Celery in this process; the model loads in the pool child. When the child cannot load it, it
    writes why to a status file and stops this process, which then exits with the reason."""
    with tempfile.NamedTemporaryFile(prefix="q3b-worker-", suffix=".status", delete=False) as f:
        status_file = f.name
    spec = spec.model_copy(update={"status_file": status_file, "main_pid": os.getpid()})
    spec.to_env()
    os.environ["QWEN3B_POOL"] = pool
    celery = make_app(settings, queues=[spec.queue, keys.worker_queue(spec.name)])
    if spec.kind == "compile":
        from workers.compile.task import register_compile_task as register
    else:
        from workers.tasks import register_tasks as register
    register(celery, pool)
    logging.getLogger("celery.apps.worker").addFilter(not_ready_yet)
    typer.echo(f"worker {spec.name}: queue {spec.queue}, broker {redact_url(settings.broker_url)}")
    typer.echo(describe_roots(settings))
    try:
        celery.worker_main(["worker", "-n", spec.name, "-c", "1", "-P", pool, "-l", loglevel,
                            "--without-gossip", "--without-mingle", "-Q", f"{spec.queue},{keys.worker_queue(spec.name)}"])
    except SystemExit as exc:
        code = exc.code
    else:
        code = 0
    finally:
        reason = Path(status_file).read_text() if os.path.exists(status_file) else ""
        Path(status_file).unlink(missing_ok=True)
    if reason:
        typer.echo(f"error: {reason}", err=True)
        raise typer.Exit(3)
    raise typer.Exit(code if isinstance(code, int) else 0)


def check_artifacts(engine: EngineSpec) -> None:
    """A compiled backend without artifacts fails here, at start, naming the compile command
    (not in the pool child, where Celery would restart it over and over)."""
    from workers.engines.fixed_shape import find_artifacts
    from workers.engines.registry import COMPILED_BACKENDS

    if engine.backend in COMPILED_BACKENDS:
        find_artifacts(engine)


def check_output_root(settings) -> None:
    """The output root must exist and support first-committer-wins commits (hard links on POSIX, a
    conditional create in a bucket): refused here, once, rather than on every shard."""
    from common.io.fs import is_object_url
    from common.io.store import OutputStore

    root = settings.worker_output_root
    if not is_object_url(root) and not Path(root).is_dir():
        raise ConfigError(f"QWEN3B_OUTPUT_ROOT={settings.output_root}: no such folder (mount the shared output "
                          "store there, or set QWEN3B_OUTPUT_ROOT to where it is mounted)")
    OutputStore(root).check_commits_supported()


def describe_roots(settings) -> str:
    """What a message can make this worker read and write: said at start, since the defaults are narrow."""
    out = settings.worker_output_root + ("" if settings.output_root else " (QWEN3B_OUTPUT_ROOT unset: the folder "
                                                                         "this worker started in)")
    ins = ", ".join(settings.worker_input_roots) + ("" if settings.input_roots else " (QWEN3B_INPUT_ROOTS unset: "
                                                                                  "the folder this worker started in)")
    return f"writes outputs only under {out}; reads inputs only under {ins}"


def join_cluster(settings, worker_name: str, task: str = "embed", device: str = "cpu") -> str:
    """Wait for the broker, check that it never evicts, choose this worker's name (a unique one
    without --name; a given one is refused while a live worker holds it: workers/identity.py), then
    register this worker's reliability settings or check them against the cluster's. A refused
    password, a rejected certificate, an evicting Redis, a name in use or a differing setting ends
    the process with the reason, before Celery starts (which would retry a refused password
    forever). Returns the name."""
    say = lambda message: typer.echo(message, err=True)  # noqa: E731
    try:
        client = wait_for_broker(settings, say)
        check_eviction_policy(client, settings)
        if worker_name:
            identity.check_name_free(client, worker_name, say)
        else:
            worker_name = identity.default_name(task, device, client)
        register_or_check(client, settings, worker_name)
    except Qwen3BatchError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    return worker_name


@app.command()
def health(
    name: str = typer.Option(..., help="the worker's name (its --name, or the one it printed at start)", metavar="TEXT"),
    max_age_s: int = typer.Option(defaults.WORKER_HEALTHY_WITHIN_S, help="the last heartbeat must be this recent", metavar="N"),
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
    task: str = typer.Option("embed", help="embed | rerank", metavar="TEXT"),
    shape: str = typer.Option("tiny", help="tiny (tests, demo) | 0.6b (the real shape, for benchmarks)", metavar="TEXT"),
    out: str = typer.Option(".cache/models", help="parent folder; the model goes in a subfolder named after it", metavar="TEXT"),
    seed: int = typer.Option(defaults.TINY_MODEL_SEED, metavar="N"),
):
    """Build a RANDOM-WEIGHT Qwen3 checkpoint with the real Qwen vocabulary (offline)."""
    from workers.models.random_init import ensure_random_model

    typer.echo(ensure_random_model(out, task, shape, seed))


def main():
    cli_runner.main(app, "workers")


if __name__ == "__main__":
    main()
