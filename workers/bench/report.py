"""The benchmark's report: a JSON document (settings, host, instances, results) and a rich table."""

import os
import platform
import socket
import sys
from pathlib import Path

from workers.bench.instances import cpu_name
from workers.bench.stats import percentile_key


def host_info(load_at_start: list[float]) -> dict:
    """The machine, and its load before and after the run (a shared host's load skews every figure)."""
    return {"hostname": socket.gethostname(), "platform": platform.platform(), "python": sys.version.split()[0],
            "cpu": cpu_name(), "cpu_count": os.cpu_count(), "cpus_usable": len(os.sched_getaffinity(0)),
            "load_average_at_start": load_at_start, "load_average_at_end": list(os.getloadavg())}


def build_report(options, instances: list[dict], results: list[dict], started_at: str, seconds: float,
                 load_at_start: list[float], origin: dict) -> dict:
    first = instances[0]
    return {
        "tool": "workers bench",
        "started_at": started_at,
        "seconds": round(seconds, 2),
        "settings": options.as_json(),
        "model": {"source": options.model, "random_weights": first["random_weights"],
                  "hidden_size": first["hidden_size"]},
        "torch_version": first["torch_version"],
        "device_name": first["device_name"],
        "host": host_info(load_at_start),
        "provenance": origin,
        "instances": instances,
        "results": results,
        "notes": {
            "request": "batch_size x seqlen token ids, every row full (no padding): tokens = batch_size * seqlen; "
                       "the backend's forward pass only (no tokenisation, no normalisation)",
            "latency_ms": "driver clock, from queueing a request to receiving its result (waiting included)",
            "compute_ms": "the instance's own time in the forward pass",
            "percentiles": "linear interpolation between closest ranks (numpy's default)",
        },
    }


def title(report: dict) -> str:
    s = report["settings"]
    weights = "RANDOM WEIGHTS" if report["model"]["random_weights"] else "real weights"
    return (f"workers bench: {Path(s['model']).name} ({weights}), {s['task']}, {s['backend']} {s['dtype']}, "
            f"{','.join(s['devices'])} x {s['instances_per_device']} instance(s) [{report['device_name']}]")


def render_table(report: dict):
    from rich.table import Table

    percentiles = report["settings"]["percentiles"]
    table = Table(title=title(report), caption="latency in ms, from queueing to result; tokens = batch x seqlen")
    for name in ("mode", "batch", "seqlen", "requests", "in flight", "seq/s", "tok/s", "avg", "min",
                 *(percentile_key(p) for p in percentiles), "max"):
        table.add_column(name, justify="left" if name == "mode" else "right")
    for r in report["results"]:
        lat = r["latency_ms"]
        table.add_row(r["mode"], str(r["batch_size"]), str(r["seqlen"]), str(r["requests"]),
                      f"{r['max_in_flight']}/{r['in_flight_limit']}",
                      f"{r['sequences_per_s']:,.2f}", f"{r['tokens_per_s']:,.0f}",
                      *(f"{lat[k]:,.1f}" for k in ("avg", "min", *(percentile_key(p) for p in percentiles), "max")))
    return table
