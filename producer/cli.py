"""The producer CLI: a thin layer over the Python API (producer/api.py, `import qwen3batch`).

Exit codes: 0 done (or queued, without --wait); 1 shards failed, or every row was rejected;
2 a usage or configuration error; 3 cancelled; 4 --timeout; 130 interrupted (the job goes on).
"""

import json
import time

import typer
from rich.console import Console
from rich.table import Table

from common import cli_runner, defaults, options
from common.errors import Qwen3BatchError
from common.settings import load_settings
from producer import api
from producer import submit as broker
from producer.progress import reporter_for, summary_table

ENVIRONMENT = ("Settings come from QWEN3B_* environment variables (.env.example lists them): QWEN3B_BROKER_URL "
               "above all (default redis://127.0.0.1:6379/0), QWEN3B_OUTPUT_ROOT, the time limits. Add --debug to "
               "any command for a traceback on an unexpected error.")
app = typer.Typer(help=f"Plan, submit and follow embedding and rerank jobs.\n\n{ENVIRONMENT}", no_args_is_help=True,
                  pretty_exceptions_enable=False, rich_markup_mode=None)
console = Console(stderr=True, soft_wrap=True)  # log lines stay whole when stderr is a file
EXIT_FAILED, EXIT_CANCELLED, EXIT_TIMEOUT = 1, 3, 4
FLAG = ""  # metavar of a flag: it takes no value (typer would print <bool>)


@app.command()
def submit(
    inputs: str = typer.Argument(..., metavar="INPUTS", hidden=True),  # described in the docstring: no "<str>"
    model: str = typer.Option(..., metavar="MODEL", help="checkpoint folder (or hub id) of Qwen3-Embedding or "
                                                         "Qwen3-Reranker; its config and tokenizer are checked first"),
    out: str = typer.Option(..., metavar="DIR", help="output folder on a store every worker can reach (relative: "
                                                     "under QWEN3B_OUTPUT_ROOT when set)"),
    task: str = typer.Option("embed", metavar="TASK", help="embed | rerank (the checkpoint must be of that kind)"),
    id_column: str = typer.Option(defaults.DEFAULT_ID_COLUMN, metavar="NAME",
                                  help=f"the id field; {defaults.ROW_NUMBER_ID} numbers the rows instead"),
    text_column: str = typer.Option(defaults.DEFAULT_TEXT_COLUMN, metavar="NAME", help="embed: the text field"),
    query_column: str = typer.Option(defaults.DEFAULT_QUERY_COLUMN, metavar="NAME", help="rerank: the query field"),
    document_column: str = typer.Option(defaults.DEFAULT_DOCUMENT_COLUMN, metavar="NAME",
                                        help="rerank: the document field"),
    keep_columns: str = typer.Option("", metavar="A,B", help="input fields copied into the output next to the id "
                                                             "(a title, a URL, the text); jsonl values as strings"),
    instruction: str = typer.Option(None, metavar="TEXT", show_default=False,
                                    help="embed: embed the texts as queries with this instruction (default: as "
                                         f"documents, no instruction); rerank: the Instruct line (default: "
                                         f"\"{defaults.DEFAULT_RERANK_INSTRUCTION}\")"),
    query: bool = typer.Option(False, "--query", metavar=FLAG,
                               help=f"embed the texts as queries with \"{defaults.DEFAULT_RETRIEVAL_INSTRUCTION}\""),
    dim: int = typer.Option(None, metavar="N", show_default=False,
                            help=f"MRL output dimension, {defaults.MIN_EMBEDDING_DIM}..hidden size (default: the "
                                 "hidden size, 1024 for the 0.6B model)"),
    seqlens: str = typer.Option(",".join(map(str, defaults.DEFAULT_SEQLENS)), metavar="LIST",
                                help="length buckets in tokens; the largest truncates"),
    dtype: str = typer.Option("auto", metavar="DTYPE", help="auto | fp32 | bf16 | fp16 | int8 (onnx). Workers serve "
                                                            "one dtype and backend each, and a job waits for workers "
                                                            "of its own: auto asks the live workers of this model "
                                                            "(--local: fp32 on cpu, bf16 on cuda)"),
    backend: str = typer.Option(defaults.DEFAULT_BACKEND, metavar="BACKEND",
                                help=f"{' | '.join(options.BACKENDS)} (onnx, vacc: after producer compile)"),
    output_dtype: str = typer.Option("float32", metavar="TYPE", help="embedding values: float32 | float16"),
    shard_rows: int = typer.Option(defaults.DEFAULT_SHARD_ROWS, metavar="N", help="input rows per shard task"),
    name: str = typer.Option(None, metavar="NAME", show_default=False,
                             help="job id (default: job-<hash of the job and its output>)"),
    wait: bool = typer.Option(False, "--wait", metavar=FLAG, help="follow the job with live progress to the end"),
    timeout: float = typer.Option(None, metavar="SECONDS", show_default=False,
                                  help="with --wait: give up once no worker has served the job's queue this long"),
    local: bool = typer.Option(False, "--local", metavar=FLAG, help="run the job in this process, no broker"),
    device: str = typer.Option(defaults.DEFAULT_DEVICE, metavar="DEVICE", help="--local only: cpu | cuda:N"),
    dedup: bool = typer.Option(True, "--dedup/--no-dedup", help="rows of identical input get their value from one "
                               "computation (--no-dedup: every row is computed)"),
    reuse: list[str] = typer.Option([], "--reuse", metavar="OUT", show_default=False,
                                    help="an earlier output of the same model and options: its values are copied for "
                                         "the inputs it holds (repeatable)"),
):
    """Plan a job over INPUTS (a .jsonl or .parquet file, a folder of them, or a glob) and enqueue
    its shards for the workers, or run them here with --local.

    The same job submitted again resumes it; a different job into the same --out is refused,
    naming what differs."""
    job = api.submit(inputs, model=model, out=out, task=task, local=local, dtype=dtype, backend=backend,
                     device=device, seqlens=options.parse_seqlens(seqlens), instruction=instruction, query=query,
                     dim=dim, output_dtype=output_dtype, id_column=id_column, text_column=text_column,
                     query_column=query_column, document_column=document_column,
                     keep_columns=tuple(c.strip() for c in keep_columns.split(",") if c.strip()),
                     shard_rows=shard_rows, name=name, progress=reporter_for(console), dedup=dedup, reuse=reuse)
    if local:
        finish(job.status())
    if not wait:
        typer.echo(job.job_id)
        raise typer.Exit(0)
    follow(job, timeout)


@app.command("wait")
def wait_command(job: str = typer.Argument(..., metavar="JOB", hidden=True),
                 timeout: float = typer.Option(None, metavar="SECONDS", show_default=False,
                                               help="give up once no worker has served the job's queue this long")):
    """Follow JOB (a job id, or its output folder) to its end: after a Ctrl-C, or from another machine."""
    follow(api.open_job(job), timeout)


def follow(job: api.Job, timeout: float | None) -> None:
    try:
        status = job.wait(progress=reporter_for(console), timeout_s=timeout)
    except api.WaitTimeout as exc:
        console.print(f"[yellow]{exc}[/]")
        raise typer.Exit(EXIT_TIMEOUT) from exc
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    finish(status)


def finish(status: api.JobStatus) -> None:
    """The summary of a job, and its exit code."""
    console.print(summary_table(status))
    for line in status.changed_inputs:
        console.print(f"[red]input changed since planning:[/] {line}; its shards are refused")
    if status.all_rejected:
        console.print(f"[red]every one of the {status.rows_total:,} rows was rejected[/]: see {status.rejects} "
                      "(a wrong --text-column? an empty corpus?)")
    raise typer.Exit(exit_code(status))


def exit_code(status: api.JobStatus) -> int:
    if status.all_rejected:
        return EXIT_FAILED
    return {"completed": 0, "completed_with_failures": EXIT_FAILED, "cancelled": EXIT_CANCELLED}.get(status.status, 0)


@app.command()
def status(job: str = typer.Argument(..., metavar="JOB", hidden=True),
           watch: bool = typer.Option(False, "--watch", metavar=FLAG, help="follow until the job ends"),
           as_json: bool = typer.Option(False, "--json", metavar=FLAG, help="one JSON object, for scripts")):
    """Progress of JOB (a job id, or its output folder), read from the output folder."""
    handle = api.open_job(job)
    if watch:
        follow(handle, None)
    current = handle.status()
    if as_json:
        typer.echo(json.dumps(current.to_dict(), indent=1))
        raise typer.Exit(exit_code(current))
    finish(current)


@app.command()
def resume(job: str = typer.Argument(..., metavar="JOB", hidden=True),
           retry_quarantined: bool = typer.Option(False, "--retry-quarantined", metavar=FLAG,
                                                  help="give quarantined shards another round of attempts"),
           wait: bool = typer.Option(False, "--wait", metavar=FLAG, help="follow the job to its end"),
           timeout: float = typer.Option(None, metavar="SECONDS", show_default=False,
                                         help="with --wait: give up once no worker has served the queue this long")):
    """Publish every shard of JOB (a job id, or its output folder) that nothing runs (no commit, no
    queued message, no live worker on it): after a Redis loss, a crash, a cancel. It never doubles the queue; the workers' reconciler does
    the same on its own."""
    handle = api.open_job(job)
    for line in handle.status().changed_inputs:
        console.print(f"[red]input changed since planning:[/] {line}; its shards will be refused and quarantined")
    if retry_quarantined:
        console.print("retrying the quarantined shards")
    handle.resume(retry_quarantined, reporter=reporter_for(console))
    if wait:
        follow(handle, timeout)


@app.command()
def cancel(job: str = typer.Argument(..., metavar="JOB", hidden=True)):
    """Stop JOB (a job id, or its output folder): queued shards are skipped, committed output stays,
    `resume` continues it."""
    handle = api.open_job(job)
    handle.cancel()
    console.print(f"cancelled {handle.job_id}; resume with: producer resume {handle.output}")


@app.command()
def jobs(as_json: bool = typer.Option(False, "--json", metavar=FLAG, help="a JSON list, for scripts")):
    """Jobs submitted through this broker (since Redis last lost its data), with their state."""
    client = broker.connect(load_settings())
    found = []
    for job_id, out in broker.list_jobs(client).items():
        try:
            found.append(api.open_job(out).status().to_dict())
        except Qwen3BatchError as exc:
            found.append({"job_id": job_id, "status": "unreadable", "output": out, "error": str(exc)})
    if as_json:
        typer.echo(json.dumps(found, indent=1))
        return
    table = Table("job", "status", "rows done", "output")
    for j in found:
        done = f"{j['rows_done']:,}/{j['rows_total']:,}" if "rows_done" in j else ""
        table.add_row(j["job_id"], j["status"], done, j["output"] + (f" ({j['error']})" if "error" in j else ""))
    Console().print(table)


@app.command()
def workers(as_json: bool = typer.Option(False, "--json", metavar=FLAG, help="every field of every heartbeat")):
    """Live workers: what each serves, its shard, and its recent rows/s and tokens/s."""
    beats = broker.live_workers(broker.connect(load_settings()))
    if as_json:
        typer.echo(json.dumps(beats, indent=1))
        return
    # 80 columns: the host is part of the name, the model is on the queue (--json has it all)
    table = Table("worker", "device", "serves", "shard", "rows/s", "tok/s", box=None, padding=(0, 1))
    for w in beats:
        shard = w.get("current_shard") or "-"
        table.add_row(w["name"], w.get("device", "?"), f"{w.get('task', '?')} {w.get('dtype', '?')} {w.get('backend', '?')}",
                      f"{shard} +{w.get('current_rows', 0)}" if shard != "-" else "-",
                      f"{w.get('rows_per_s', 0):,.0f}", f"{w.get('tokens_per_s', 0):,.0f}")
    Console(width=80).print(table)
    for w in beats:
        if w.get("stalled"):
            console.print(f"[yellow]{w['name']} waits for its store[/]: {w['stalled']}")
    if not beats:
        console.print("no live worker (start one: workers start --model DIR --device cpu|cuda:N)")


@app.command("cluster-settings")
def cluster_settings_command(
    reset: bool = typer.Option(False, "--reset", metavar=FLAG,
                               help="forget the registered settings; the next worker to start registers its own"),
    force: bool = typer.Option(False, "--force", metavar=FLAG, help="reset even while workers are alive"),
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
    model: str = typer.Option(..., metavar="MODEL", help="checkpoint folder of Qwen3-Embedding / Qwen3-Reranker"),
    backend: str = typer.Option("onnx", metavar="BACKEND", help="onnx | vacc"),
    task: str = typer.Option("embed", metavar="TASK", help="embed | rerank"),
    seqlens: str = typer.Option(",".join(map(str, defaults.DEFAULT_SEQLENS)), metavar="LIST",
                                help="one artifact per length (multiples of 16)"),
    batch: int = typer.Option(defaults.DEFAULT_COMPILE_BATCH, metavar="N", help="the compiled batch size"),
    dtype: str = typer.Option("fp32", metavar="DTYPE", help="onnx: fp32 | fp16 | int8; vacc: fp16"),
    local: bool = typer.Option(False, "--local", metavar=FLAG, help="compile in this process, no broker"),
    wait: bool = typer.Option(False, "--wait", metavar=FLAG, help="follow the queued jobs until every artifact is done"),
    device: str = typer.Option(defaults.DEFAULT_DEVICE, metavar="DEVICE", help="--local only: where artifacts are "
                                                                               "validated"),
):
    """Build fixed-shape artifacts (one per sequence length) on the compile queue, or here with --local.

    Each artifact is validated against the fp32 torch engine before it is published to the artifact
    store (QWEN3B_ARTIFACT_STORE); one that disagrees is not published and the job says why."""
    from producer.compile_cli import compile_artifacts

    compile_artifacts(console, model, backend, task, options.parse_seqlens(seqlens), batch, dtype, local, wait, device)


def main():
    cli_runner.main(app, "producer")


if __name__ == "__main__":
    main()
