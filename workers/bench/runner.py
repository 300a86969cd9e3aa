"""One benchmark run: start the instances, then for each configuration warm up and measure each mode."""

import os
import time
from datetime import datetime, timezone

from common.provenance import confirm, provenance
from workers.bench.driver import measure
from workers.bench.instances import InstancePool, plan_placements
from workers.bench.options import BenchOptions
from workers.bench.report import build_report


def engine_fields(options: BenchOptions) -> dict:
    """The EngineSpec of every instance (device added per instance): fixed shapes, one bucket per
    swept length, so a compiled backend finds each shape it must have been built for."""
    return {"model": options.model, "task": options.task, "backend": options.backend, "dtype": options.dtype,
            "seqlens": tuple(options.seqlens), "pad_to_bucket": True, "torch_compile": options.torch_compile}


def run_bench(options: BenchOptions, console) -> dict:
    """Measure every (configuration, mode); the report as a JSON-ready dict. Progress on `console`."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    load_at_start = list(os.getloadavg())
    origin = provenance("workers bench")
    start = time.perf_counter()
    placements = plan_placements(options.devices, options.instances_per_device)
    results = []
    with InstancePool(placements, engine_fields(options)) as pool:
        console.log(f"starting {len(placements)} instance(s) of the {options.backend} backend on "
                    f"{', '.join(options.devices)}: loading {options.model}")
        instances = pool.start()
        for info in instances:
            console.log(f"instance {info['instance']}: {info['device']} ({info['device_name']}), "
                        f"{info['engine']}, torch {info['torch_version']}, threads {info['torch_threads']}, "
                        f"cores {info['cpu_cores']}")
        configs = options.configs()
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=console) as progress:
            total = progress.add_task("requests", total=len(configs) * len(options.modes) * options.iterations)
            for batch_size, seqlen in configs:
                progress.update(total, description=f"b{batch_size} x {seqlen}: warm-up")
                pool.prepare(batch_size, seqlen, options.warmup, options.seed)
                for mode in options.modes:
                    progress.update(total, description=f"b{batch_size} x {seqlen}: {mode}")
                    result = measure(pool, mode, batch_size, seqlen, options.iterations, options.in_flight_limit,
                                     options.percentiles, on_done=lambda _: progress.advance(total))
                    results.append(result)
                    console.log(summary_line(result))
    return build_report(options, instances, results, started_at, time.perf_counter() - start, load_at_start,
                        confirm(origin))


def summary_line(result: dict) -> str:
    lat = result["latency_ms"]
    return (f"b{result['batch_size']} x {result['seqlen']} {result['mode']:>10}: "
            f"{result['sequences_per_s']:,.2f} seq/s, {result['tokens_per_s']:,.0f} tok/s, "
            f"latency avg {lat['avg']:,.1f} ms, max {lat['max']:,.1f} ms")
