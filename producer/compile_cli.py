"""`producer compile`: plan the compile jobs, run them here or on the compile queue, show the results."""

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from common import keys
from common.artifacts import ArtifactStore
from common.model_identity import model_ref
from common.settings import load_settings
from producer import compile as compiling
from producer import submit as broker


def compile_artifacts(console: Console, model: str, backend: str, task: str, seqlens: tuple[int, ...], batch: int,
                      dtype: str, local: bool, wait: bool, device: str) -> None:
    settings = load_settings()
    store = ArtifactStore(settings.artifact_store, settings.artifact_cache)
    requests = compiling.plan_compile(model_ref(model), backend, task, dtype, seqlens, batch)
    console.print(f"compile job {requests[0].job}: {len(requests)} {backend} {dtype} artifacts of {model} "
                  f"({task}, batch {batch}) into {store.location()}")
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
        results = follow_compile(console, client, store, requests)
    console.print(compile_table(requests, results))
    failed = {a: r for a, r in results.items() if r["state"] == "failed"}
    for artifact, r in failed.items():  # whole, where the table may cut it
        console.print(f"[red]failed:[/] {artifact}: {r.get('reason', '')}")
    if failed:
        raise typer.Exit(1)


def follow_compile(console: Console, client, store, requests) -> dict:
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
