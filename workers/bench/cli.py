"""`workers bench`: latency and throughput of an engine on its device(s).

Imported by the workers CLI at start-up, so it imports only typer here; the benchmark's modules
(and through the instances, torch) load when the command runs.
"""

from pathlib import Path

import typer

from common.errors import Qwen3BatchError

LOG_WIDTH = 160  # columns of the table when output goes to a file


def bench(
    model: str = typer.Option(..., help="checkpoint folder or hub id, or whatever the backend loads", metavar="TEXT"),
    task: str = typer.Option("embed", help="embed | rerank", metavar="TEXT"),
    backend: str = typer.Option("torch", help="an engine backend of workers/engines/registry.py (torch, onnx, ...)", metavar="TEXT"),
    dtype: str = typer.Option("bf16", help="fp32 | bf16 | fp16 (int8: compiled onnx artifacts)", metavar="TEXT"),
    devices: str = typer.Option("cpu", help="comma-separated device ids: cpu, or cuda:0,cuda:1, or vacc:0", metavar="TEXT"),
    instances: int = typer.Option(1, help="engine processes per device, each loading its own engine", metavar="N"),
    batch_size: int = typer.Option(8, help="sequences per request", metavar="N"),
    seqlen: int = typer.Option(512, help="tokens per sequence: every request is batch x seqlen real tokens", metavar="N"),
    sweep_batch: str = typer.Option("", help="batch sizes to sweep, e.g. 1,2,4,8 (replaces --batch-size)", metavar="TEXT"),
    sweep_seqlen: str = typer.Option("", help="sequence lengths to sweep, e.g. 128,256,512 (replaces --seqlen)", metavar="TEXT"),
    mode: str = typer.Option("both", help="throughput (a bounded queue in flight) | latency (one at a time) | both", metavar="TEXT"),
    warmup: int = typer.Option(3, help="untimed requests per instance before each configuration", metavar="N"),
    iterations: int = typer.Option(20, help="timed requests per configuration and mode", metavar="N"),
    queue_depth: int = typer.Option(0, help="throughput mode: requests in flight (0: two per instance)", metavar="N"),
    percentiles: str = typer.Option("50,90,95,99", help="latency percentiles to report", metavar="TEXT"),
    out: Path = typer.Option(Path("bench-results/perf.json"), help="JSON report; PNGs go next to it", metavar="PATH"),
    plots: bool | None = typer.Option(None, "--plots/--no-plots", help="draw PNG plots (default: when sweeping)", metavar=""),
    seed: int = typer.Option(0, help="seed of the random token ids", metavar="N"),
    torch_compile: str = typer.Option("off", help="off | inductor | cudagraphs (CUDA): as workers start "
                                      "--torch-compile; the warm-up requests compile", metavar="TEXT"),
):
    """Measure throughput (sequences/s, tokens/s) and latency percentiles of an engine on fixed-shape
    requests, in maximum-throughput and minimum-latency modes, over instances spread across devices."""
    from rich.console import Console

    from workers.bench import options as opts

    try:
        options = opts.BenchOptions(
            model=model, task=task, backend=backend, dtype=dtype, devices=opts.parse_devices(devices),
            instances_per_device=instances,
            batch_sizes=opts.parse_ints(sweep_batch, "--sweep-batch") if sweep_batch else (batch_size,),
            seqlens=opts.parse_ints(sweep_seqlen, "--sweep-seqlen") if sweep_seqlen else (seqlen,),
            modes=opts.parse_modes(mode), warmup=warmup, iterations=iterations, queue_depth=queue_depth,
            percentiles=opts.parse_percentiles(percentiles), seed=seed, torch_compile=torch_compile)
    except Qwen3BatchError as exc:
        raise typer.BadParameter(str(exc)) from exc
    try:
        write_outputs(options, out, len(options.configs()) > 1 if plots is None else plots, wide(Console()),
                      wide(Console(stderr=True, log_path=False)))
    except Qwen3BatchError as exc:
        typer.echo(f"workers bench: {exc}", err=True)
        raise typer.Exit(1) from exc


def wide(console):
    """Logs and CI capture output without a terminal; rich would then wrap the table at 80 columns."""
    if not console.is_terminal:
        console.width = LOG_WIDTH
    return console


def write_outputs(options, out: Path, draw: bool, console, progress_console) -> None:
    """Run the benchmark, print its table, write the JSON and (if asked) the plots."""
    import json

    from workers.bench.report import render_table
    from workers.bench.runner import run_bench

    report = run_bench(options, progress_console)
    console.print(render_table(report))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    console.print(f"JSON: {out}")
    if draw:
        from workers.bench.plots import draw_plots

        for path in draw_plots(report, out):
            console.print(f"plot: {path}")
