"""The producer CLI: plan and submit jobs, watch them, resume, cancel, list."""

import contextlib
import logging
import sys
import time

import pydantic
import redis
import typer
from rich.console import Console
from rich.table import Table

from common import defaults, keys
from common.broker import BrokerError
from common.errors import Qwen3BatchError
from common.io.corpus import changed_inputs
from common.io.store import OutputStore
from common.jobstate import JobCheckError, finalize, read_state
from common.model_identity import model_ref
from common.schemas import JobSpec, Plan
from common.settings import load_settings, parse_seqlens
from producer import submit as broker
from producer.plan import plan_job
from producer.progress import RateWindow, make_bar, rate_fields, summary_table

app = typer.Typer(help="Plan, submit and follow embedding and rerank jobs.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
console = Console(stderr=True, soft_wrap=True)  # log lines stay whole when stderr is a file
EXIT_FAILED_SHARDS, EXIT_CANCELLED = 1, 3


@app.command()
def submit(
    inputs: str = typer.Argument(..., help="a .jsonl or .parquet file, a folder of them, or a glob"),
    model: str = typer.Option(..., help="checkpoint folder (or hub id) of Qwen3-Embedding / Qwen3-Reranker"),
    out: str = typer.Option(..., help="output folder on a store every worker can reach"),
    task: str = typer.Option("embed", help="embed | rerank"),
    id_column: str = typer.Option(defaults.DEFAULT_ID_COLUMN, help=f"id field; {defaults.ROW_NUMBER_ID} numbers rows"),
    text_column: str = typer.Option(defaults.DEFAULT_TEXT_COLUMN, help="embed: the text field"),
    query_column: str = typer.Option(defaults.DEFAULT_QUERY_COLUMN, help="rerank: the query field"),
    document_column: str = typer.Option(defaults.DEFAULT_DOCUMENT_COLUMN, help="rerank: the document field"),
    instruction: str = typer.Option(None, help="embed: apply the query template with this instruction; "
                                               "rerank: the Instruct line"),
    query: bool = typer.Option(False, "--query", help="embed the texts as queries (default retrieval instruction)"),
    dim: int = typer.Option(None, help="MRL output dimension (32..hidden size)"),
    seqlens: str = typer.Option(",".join(map(str, defaults.DEFAULT_SEQLENS)), help="length buckets; the largest truncates"),
    dtype: str = typer.Option(defaults.DEFAULT_DTYPE, help="fp32 | bf16 | fp16"),
    backend: str = typer.Option(defaults.DEFAULT_BACKEND),
    output_dtype: str = typer.Option("float32", help="embedding values: float32 | float16"),
    shard_rows: int = typer.Option(defaults.DEFAULT_SHARD_ROWS, help="input rows per shard task"),
    name: str = typer.Option(None, help="job id (default: job-<fingerprint>)"),
    wait: bool = typer.Option(False, "--wait", help="show live progress; exit non-zero if shards fail"),
    local: bool = typer.Option(False, "--local", help="run in this process, no broker"),
    device: str = typer.Option(defaults.DEFAULT_DEVICE, help="--local only: cpu | cuda:N"),
):
    """Plan a job over INPUTS and enqueue its shards (or run them here with --local)."""
    if query and instruction is None and task == "embed":
        instruction = defaults.DEFAULT_RETRIEVAL_INSTRUCTION
    spec = JobSpec(task=task, model=model_ref(model), backend=backend, dtype=dtype, seqlens=parse_seqlens(seqlens),
                   instruction=instruction, dim=dim, output_dtype=output_dtype, id_column=id_column,
                   text_column=text_column, query_column=query_column, document_column=document_column,
                   shard_rows=shard_rows)
    settings = load_settings()
    store = OutputStore(settings.output_location(out))
    client = None if local else broker.connect(settings)  # fail before the (long) planning scan
    store.check_links()
    plan = make_plan(inputs, spec, store, name)
    if local:
        run_here(store, plan, device)
    else:
        broker.check_workers_accept(client, plan, str(store.root))
        send(settings, client, store, plan)
        if not wait:
            typer.echo(plan.job_id)
            return
        follow(settings, store, plan, client)
    raise typer.Exit(exit_code(read_state(store, plan).status))


def make_plan(inputs: str, spec: JobSpec, store: OutputStore, name: str | None) -> Plan:
    started = time.perf_counter()

    def on_file(index: int, total: int, path):
        console.print(f"planning: scanning input {index + 1}/{total} {path}")

    plan, new = plan_job(inputs, spec, store, name, on_file)
    verb = "planned" if new else "resuming"
    console.print(f"{verb} job {plan.job_id}: {plan.rows_total:,} rows in {len(plan.inputs)} files, "
                  f"{len(plan.shards)} shards, {plan.duplicate_ids:,} duplicate ids, queue {plan.queue} "
                  f"({time.perf_counter() - started:.1f}s)")
    return plan


def send(settings, client, store: OutputStore, plan: Plan) -> None:
    if store.is_cancelled():
        console.print(f"job {plan.job_id} is cancelled: nothing is enqueued; `producer resume {store.root}` continues it")
        return
    with make_bar(console) as bar:
        task = bar.add_task("enqueue", total=len(read_state(store, plan).pending), rate="")
        sent = broker.enqueue(settings, client, store, plan, lambda n: bar.update(task, completed=n))
        bar.update(task, total=len(sent), completed=len(sent))
    console.print(f"enqueued {len(sent)} shards of {len(plan.shards)} on {plan.queue} (the others are committed, "
                  "quarantined, queued or running)")


def run_here(store: OutputStore, plan: Plan, device: str) -> None:
    from producer.local import run_local

    window = RateWindow()
    with make_bar(console) as bar:
        task = bar.add_task(plan.job_id, total=plan.rows_total, rate="")

        def on_shard(_):
            state = read_state(store, plan)
            bar.update(task, completed=state.rows_done, rate=rate_fields(state, window))

        on_shard(None)
        run_local(store, plan, device, load_settings().max_attempts, on_shard)
    conclude(store, plan)


def follow(settings, store: OutputStore, plan: Plan, client) -> None:
    """The live bar until every shard is committed or quarantined (or the job is cancelled). It also
    runs the reconciler for this job, so a job followed here completes even when no worker knows
    it (every queue lost in a Redis restart before any shard started), and says when workers
    refuse its messages."""
    # The first check waits one heartbeat period, so workers started with the job are seen.
    window, warned_at = RateWindow(), time.monotonic() - 30 + 2 * settings.heartbeat_interval_s
    reconciled_at, shown_refusals = time.monotonic(), set()
    with make_bar(console) as bar:
        task = bar.add_task(plan.job_id, total=plan.rows_total, rate="")
        while True:
            state = read_state(store, plan)
            bar.update(task, completed=state.rows_done, rate=rate_fields(state, window))
            if state.finished or state.cancelled:
                break
            if client is not None and time.monotonic() - reconciled_at > settings.reconcile_interval_s:
                reconciled_at = time.monotonic()
                with contextlib.suppress(redis.RedisError, BrokerError):
                    broker.reconcile(settings, client, store, plan)
                    for shard, reason in broker.refusals(client, plan).items():
                        if reason not in shown_refusals:
                            shown_refusals.add(reason)
                            console.print(f"[yellow]a worker refused shard {shard}:[/] {reason}")
            if client is not None and time.monotonic() - warned_at > 30:
                warned_at = time.monotonic()
                with contextlib.suppress(redis.RedisError):
                    if not any(w.get("queue") == plan.queue for w in broker.live_workers(client)):
                        console.print(f"[yellow]no live worker serves queue {plan.queue}. Start one:[/] workers "
                                      f"start --model {plan.spec.model.source} --task {plan.spec.task} --dtype "
                                      f"{plan.spec.dtype} --backend {plan.spec.backend} --device cpu|cuda:N")
            time.sleep(defaults.PROGRESS_REFRESH_S)
    conclude(store, plan)


def conclude(store: OutputStore, plan: Plan) -> None:
    state = read_state(store, plan)
    if state.finished:
        try:
            state.success = finalize(store, state)  # writes it, or anew when the records changed after it
        except JobCheckError as exc:
            console.print(f"[red]job check failed, not marked done:[/] {exc}")
            raise typer.Exit(2) from exc
    console.print(summary_table(state))
    for line in changed_inputs(plan.inputs):
        console.print(f"[red]input changed since planning:[/] {line}; its shards are refused")
    console.print(f"results: {store.root / 'data'}  rejects: {store.root / 'rejects'}")


def exit_code(status: str) -> int:
    return {"completed": 0, "completed_with_failures": EXIT_FAILED_SHARDS, "cancelled": EXIT_CANCELLED}.get(status, 0)


def optional_client():
    try:
        return broker.connect(load_settings())
    except BrokerError:
        return None


@app.command()
def status(job: str = typer.Argument(..., help="job id or output folder"),
           watch: bool = typer.Option(False, "--watch", help="follow until the job ends")):
    """Progress of a job, from its output store."""
    client = optional_client()
    store = broker.find_output(client, job)
    plan = store.load_plan()
    if watch:
        follow(load_settings(), store, plan, client)
    else:
        conclude(store, plan)
    raise typer.Exit(exit_code(read_state(store, plan).status))


@app.command()
def resume(job: str = typer.Argument(..., help="job id or output folder"),
           retry_quarantined: bool = typer.Option(False, "--retry-quarantined", help="give quarantined shards "
                                                  "another round of attempts"),
           wait: bool = typer.Option(False, "--wait")):
    """Re-enqueue every planned shard without a commit record (after a Redis loss, a crash, ...)."""
    settings = load_settings()
    client = broker.connect(settings)
    store = broker.find_output(client, job)
    plan = store.load_plan()
    for line in changed_inputs(plan.inputs):
        console.print(f"[red]input changed since planning:[/] {line}; its shards will be refused and quarantined")
    store.set_cancelled(False)
    if retry_quarantined:
        console.print(f"cleared {len(broker.retry_quarantined(client, store, plan))} quarantined shards")
    send(settings, client, store, plan)
    if wait:
        follow(settings, store, plan, client)
        raise typer.Exit(exit_code(read_state(store, plan).status))


@app.command()
def cancel(job: str = typer.Argument(..., help="job id or output folder")):
    """Stop a job: queued shards are skipped; committed output stays. `resume` continues it."""
    client = optional_client()
    store = broker.find_output(client, job)
    plan = store.load_plan()
    broker.cancel(client, store, plan)
    console.print(f"cancelled {plan.job_id}; resume with: producer resume {store.root}")


@app.command()
def jobs():
    """Jobs submitted through this broker, with their state."""
    client = broker.connect(load_settings())
    table = Table("job", "status", "rows done", "output")
    for job_id, out in broker.list_jobs(client).items():
        try:
            state = read_state(OutputStore(out))
            table.add_row(job_id, state.status, f"{state.rows_done:,}/{state.plan.rows_total:,}", out)
        except Qwen3BatchError as exc:
            table.add_row(job_id, "unreadable", "", f"{out} ({exc})")
    Console().print(table)


@app.command()
def workers():
    """Live workers: device, model, queue, current shard, throughput."""
    client = broker.connect(load_settings())
    table = Table("worker", "host", "device", "task", "dtype", "backend", "current shard", "rows done", "rows/s",
                  "tokens/s", "model")
    for w in broker.live_workers(client):
        table.add_row(w["name"], w.get("host", "?"), w["device"], w["task"], w["dtype"], w["backend"],
                      w["current_shard"] or "-", f"{w.get('rows_done', 0):,}", str(w["rows_per_s"]),
                      str(w["tokens_per_s"]), w["model"])
    Console().print(table)


@app.command("cluster-settings")
def cluster_settings_command(
    reset: bool = typer.Option(False, "--reset", help="forget the registered settings; the next worker to start "
                                                      "registers its own"),
    force: bool = typer.Option(False, "--force", help="reset even while workers are alive"),
):
    """The reliability settings registered for this cluster, next to this machine's (QWEN3B_* variables)."""
    from common import cluster_settings

    client = broker.connect(load_settings())
    if reset:
        alive = [w["name"] for w in broker.live_workers(client)]
        if alive and not force:
            raise Qwen3BatchError(f"{len(alive)} workers are alive ({', '.join(alive[:8])}): they keep their old "
                                  "settings. Stop them first, or pass --force")
        cleared = cluster_settings.reset(client)
        console.print("cluster settings cleared; the next worker to start registers its own" if cleared
                      else "no cluster settings were registered")
        return
    registered = cluster_settings.registered_settings(client)
    mine = cluster_settings.shared_settings(load_settings())
    if registered is None:
        console.print("no cluster settings registered yet: the first worker to start registers its own")
    else:
        console.print(f"registered by {registered['registered_by']} at "
                      f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(registered['registered_at']))}")
    table = Table("setting", "cluster", "this machine")
    for name in sorted(mine):
        there = "-" if registered is None else str(registered["settings"].get(name, "(not set)"))
        table.add_row(name, there, str(mine[name]))
    Console().print(table)


@app.command("compile")
def compile_command(
    model: str = typer.Option(..., help="checkpoint folder of Qwen3-Embedding / Qwen3-Reranker"),
    backend: str = typer.Option("onnx", help="onnx | vacc"),
    task: str = typer.Option("embed", help="embed | rerank"),
    seqlens: str = typer.Option(",".join(map(str, defaults.DEFAULT_SEQLENS)),
                                help="one artifact per length (multiples of 16)"),
    batch: int = typer.Option(defaults.DEFAULT_COMPILE_BATCH, help="the compiled batch size"),
    dtype: str = typer.Option("fp32", help="onnx: fp32 | fp16 | int8; vacc: fp16"),
    local: bool = typer.Option(False, "--local", help="compile in this process, no broker"),
    wait: bool = typer.Option(False, "--wait", help="follow the queued jobs until every artifact is done"),
    device: str = typer.Option(defaults.DEFAULT_DEVICE, help="--local only: where artifacts are validated"),
):
    """Build fixed-shape artifacts (one per sequence length) on the compile queue, or here with --local.

    Each artifact is validated against the fp32 torch engine before it is published to the artifact
    store (QWEN3B_ARTIFACT_STORE); one that disagrees is not published and the job says why."""
    from common.artifacts import ArtifactStore
    from producer import compile as compiling

    settings = load_settings()
    store = ArtifactStore(settings.artifact_store)
    requests = compiling.plan_compile(model_ref(model), backend, task, dtype, parse_seqlens(seqlens), batch)
    console.print(f"compile job {requests[0].job}: {len(requests)} {backend} {dtype} artifacts of {model} "
                  f"({task}, batch {batch}) into {store.root}")
    if local:
        results = compiling.run_local(requests, store, device,
                                      lambda artifact, state, f: console.print(f"  {artifact}: {state}"))
    else:
        client = broker.connect(settings)
        compiling.enqueue_compile(settings, client, requests)
        console.print(f"enqueued on the {keys.COMPILE_QUEUE!r} queue; a compile worker runs them "
                      f"(workers start --compile)")
        if not any(w.get("queue") == keys.COMPILE_QUEUE for w in broker.live_workers(client)):
            console.print("[yellow]no live compile worker right now:[/] the jobs wait in the queue until one "
                          "starts (workers start --compile)")
        if not wait:
            return
        results = follow_compile(client, store, requests)
    console.print(compile_table(requests, results))
    failed = {a: r for a, r in results.items() if r["state"] == "failed"}
    for artifact, r in failed.items():  # whole, where the table may cut it
        console.print(f"[red]failed:[/] {artifact}: {r.get('reason', '')}")
    if failed:
        raise typer.Exit(1)


def follow_compile(client, store, requests) -> dict:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from producer import compile as compiling

    with Progress(TextColumn("[bold]compile"), BarColumn(bar_width=20), MofNCompleteColumn(),
                  TextColumn("{task.fields[now]}"), TimeElapsedColumn(), console=console) as bar:
        task = bar.add_task("compile", total=len(requests), now="")

        def update(finished: dict, running: dict) -> None:
            now = ", ".join(f"{a.rsplit('.', 1)[-1]} {s['state']}" for a, s in running.items())
            bar.update(task, completed=len(finished), now=now)

        return compiling.wait_compile(client, store, requests, update)


def compile_table(requests, results: dict) -> Table:
    table = Table("seqlen", "state", "validation", "seconds", "note")
    for request in requests:
        r = results.get(request.key.artifact_id, {"state": "?"})
        v = r.get("validation") or {}
        shown = f"{v['metric']} {v['worst']:.6g} (bound {v['bound']})" if v else "-"
        table.add_row(str(request.key.seqlen), r["state"], shown, str(r.get("seconds", "-")),
                      r.get("reason") or r.get("note") or "")
    return table


def main():
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        # Without standalone mode click returns the code of a typer.Exit instead of raising it.
        code = app(standalone_mode=False)
        sys.exit(code if isinstance(code, int) else 0)
    except Qwen3BatchError as exc:
        console.print(f"[red]error:[/] {exc}")
        sys.exit(2)
    except pydantic.ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        console.print(f"[red]error:[/] invalid option: {problems}")
        sys.exit(2)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:  # click usage errors
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise


if __name__ == "__main__":
    main()
