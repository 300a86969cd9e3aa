"""An evaluation's record: its figures next to everything that produced them, as JSON and as a table.

A figure without its settings cannot be compared with another: the record names the model,
backend, dtype, device, instruction, the dataset by path and sha256, the row counts, the
package versions and the time. Figures that are undefined (NaN) are written as null, since
NaN is not JSON.
"""

import json
import math
import os
import platform
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from rich.console import Console
from rich.table import Table

from common.io.output import sha256_file
from common.provenance import provenance

DEFAULT_REPORT_DIR = Path("out") / "eval"
# Packages whose version can change a figure; those not installed are left out.
VERSIONED_PACKAGES = ("qwen3-batch", "numpy", "torch", "transformers", "tokenizers", "onnxruntime", "onnx")
RANDOM_WEIGHTS_NOTE = "RANDOM WEIGHTS: the figures show the pipeline and backend agreement, not model accuracy"


def describe_engine(engine) -> dict:
    """What ran, from the engine's own spec: a compiled backend replaces the requested length
    buckets with the lengths it was compiled for."""
    spec = engine.spec
    return {"model": spec.model, "backend": spec.backend, "dtype": spec.dtype, "device": spec.device,
            "seqlens": list(spec.seqlens), "hidden_size": engine.info.hidden_size,
            "random_weights": engine.info.random_weights}


def describe_dataset(path: str | Path, rows_read: int, row_cap: int | None) -> dict:
    path = Path(path)
    return {"path": str(path.resolve()), "sha256": sha256_file(path), "rows_read": rows_read, "row_cap": row_cap}


def collect_versions() -> dict:
    versions = {"python": platform.python_version()}
    for package in VERSIONED_PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return versions


def build_report(command: str, settings: dict, results: dict) -> dict:
    return {
        "command": command,
        "timestamp_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "settings": settings,
        "results": results,
        "versions": collect_versions(),
        "host": {"machine": platform.machine(), "cpus": os.cpu_count()},
        "provenance": provenance(f"workers eval {command}"),
    }


def default_report_path(command: str) -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return DEFAULT_REPORT_DIR / f"{command}-{stamp}.json"


def save_report(report: dict, path: str | Path) -> Path:
    """Written to a temporary name and renamed: a crashed run never leaves half a JSON file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(nan_to_null(report), indent=2, allow_nan=False, ensure_ascii=False) + "\n",
                   encoding="utf-8")
    os.replace(tmp, path)
    return path


def nan_to_null(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: nan_to_null(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [nan_to_null(v) for v in value]
    return value


def print_report(report: dict, console: Console | None = None) -> None:
    """The settings that matter, then the figures as a two-column table."""
    console = console or Console()
    for line in setting_lines(report["settings"]):
        console.print(line, highlight=False, markup=False)
    if any(e["random_weights"] for e in described_engines(report["settings"])):
        console.print(RANDOM_WEIGHTS_NOTE, style="bold red", highlight=False, markup=False)
    table = Table(title=f"workers eval {report['command']}")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key, value in report["results"].items():
        table.add_row(key, format_value(key, value))
    console.print(table)


def described_engines(settings: dict) -> list[dict]:
    return [v for v in settings.values() if isinstance(v, dict) and "backend" in v]


def setting_lines(settings: dict) -> list[str]:
    lines = [f"{name}: {e['model']} ({e['backend']}, {e['dtype']}, {e['device']})"
             for name, e in settings.items() if isinstance(e, dict) and "backend" in e]
    if "instruction" in settings:
        instruction = settings["instruction"]
        lines.append("instruction: none (raw text)" if instruction is None else f"instruction: {instruction!r}")
    data = settings.get("dataset")
    if data:
        cap = f", capped at {data['row_cap']:,}" if data["row_cap"] else ""
        lines.append(f"dataset: {data['path']} ({data['rows_read']:,} rows{cap}; sha256 {data['sha256'][:12]})")
    return lines


def format_value(key: str, value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and math.isnan(value):
        return "undefined"
    if isinstance(value, bool) or isinstance(value, str):
        text = str(value).replace("\n", "\\n")  # one table row per figure
        return text if len(text) <= 80 else text[:77] + "..."
    if isinstance(value, int):
        return f"{value:,}"
    if key.endswith("_x100"):
        return f"{value:.2f}"
    if key.endswith("_s"):
        return f"{value:.1f}"
    return f"{value:.6f}"
