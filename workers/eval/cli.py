"""`workers eval ...` commands: read the file, load the engine, run, print the table, save the record.

The evaluations themselves live in sts.py, reranking.py and agreement.py; this module only turns
options into an EngineSpec and errors into messages.
"""

import time
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from common import defaults
from common.errors import Qwen3BatchError
from common.options import parse_seqlens
from workers.engines.base import EngineSpec
from workers.eval.running import DEFAULT_CHUNK_ROWS

app = typer.Typer(help="Accuracy: STS, reranking, backend agreement, datasets.", no_args_is_help=True,
                  pretty_exceptions_enable=False)

SEQLENS_TEXT = ",".join(map(str, defaults.DEFAULT_SEQLENS))
DTYPE_HELP = "fp32 | bf16 | fp16 | int8 (onnx)"
OUT_HELP = "where to save the JSON record; default out/eval/<command>-<UTC time>.json"


@contextmanager
def reporting_errors():
    """The project's own errors end the command with their message and exit code 2, no traceback."""
    try:
        yield
    except Qwen3BatchError as exc:
        # soft_wrap: a long path is never cut across lines (rich wraps at 80 columns without a terminal)
        Console(stderr=True).print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from exc


def make_spec(model: str, task: str, backend: str, dtype: str, device: str, seqlens: str) -> EngineSpec:
    return EngineSpec(model=model, task=task, backend=backend, dtype=dtype, device=device,
                      seqlens=parse_seqlens(seqlens))


def finish(command: str, settings: dict, results: dict, started: float, out: Path | None) -> None:
    from workers.eval.report import build_report, default_report_path, print_report, save_report

    results["wall_s"] = round(time.perf_counter() - started, 2)
    report = build_report(command, settings, results)
    print_report(report)
    path = save_report(report, out or default_report_path(command))
    typer.echo(f"saved {path}")


@app.command()
def sts(
    file: Path = typer.Argument(..., metavar="FILE", hidden=True),
    model: str = typer.Option(..., help="embedding checkpoint folder or hub id", metavar="TEXT"),
    backend: str = typer.Option(defaults.DEFAULT_BACKEND, metavar="TEXT"),
    dtype: str = typer.Option(defaults.DEFAULT_DTYPE, help=DTYPE_HELP, metavar="TEXT"),
    device: str = typer.Option(defaults.DEFAULT_DEVICE, help="cpu | cuda:N | vacc:N", metavar="TEXT"),
    instruction: str = typer.Option(defaults.DEFAULT_SYMMETRIC_INSTRUCTION, help="put on both sentences", metavar="TEXT"),
    no_instruction: bool = typer.Option(False, "--no-instruction", help="embed the raw sentences", metavar=""),
    max_pairs: int = typer.Option(None, help="evaluate only the first N pairs (recorded in the JSON)", metavar="N"),
    dim: int = typer.Option(None, help="MRL dimension; default the hidden size", metavar="N"),
    seqlens: str = typer.Option(SEQLENS_TEXT, help="length buckets; the largest truncates", metavar="TEXT"),
    chunk_rows: int = typer.Option(DEFAULT_CHUNK_ROWS, help="texts per engine call (one progress step)", metavar="N"),
    out: Path = typer.Option(None, help=OUT_HELP, metavar="PATH"),
):
    """STS: Spearman and Pearson (x100) of cosine similarity against the gold scores. FILE: jsonl
    with sentence1, sentence2, score (STS12, C-MTEB/BQ)."""
    from workers.engines.registry import create_engine
    from workers.eval.inputs import read_sts
    from workers.eval.report import describe_dataset, describe_engine
    from workers.eval.sts import evaluate_sts

    started = time.perf_counter()
    with reporting_errors():
        spec = make_spec(model, "embed", backend, dtype, device, seqlens)
        pairs = read_sts(file, max_pairs)
        engine = create_engine(spec)
        used_instruction = None if no_instruction else instruction
        results = evaluate_sts(engine, pairs, used_instruction, dim=dim, chunk_rows=chunk_rows)
        settings = {"engine": describe_engine(engine), "instruction": used_instruction, "dim": dim,
                    "dataset": describe_dataset(file, len(pairs), max_pairs), "chunk_rows": chunk_rows}
        finish("sts", settings, results, started, out)


@app.command()
def rerank(
    file: Path = typer.Argument(..., metavar="FILE", hidden=True),
    model: str = typer.Option(..., help="reranker checkpoint folder or hub id", metavar="TEXT"),
    backend: str = typer.Option(defaults.DEFAULT_BACKEND, metavar="TEXT"),
    dtype: str = typer.Option(defaults.DEFAULT_DTYPE, help=DTYPE_HELP, metavar="TEXT"),
    device: str = typer.Option(defaults.DEFAULT_DEVICE, help="cpu | cuda:N | vacc:N", metavar="TEXT"),
    instruction: str = typer.Option(defaults.DEFAULT_RERANK_INSTRUCTION, metavar="TEXT"),
    max_queries: int = typer.Option(None, help="evaluate only the first N queries (the vendor uses 100)", metavar="N"),
    seqlens: str = typer.Option(SEQLENS_TEXT, help="length buckets; the largest truncates documents", metavar="TEXT"),
    chunk_rows: int = typer.Option(DEFAULT_CHUNK_ROWS, help="pairs per engine call (one progress step)", metavar="N"),
    out: Path = typer.Option(None, help=OUT_HELP, metavar="PATH"),
):
    """Reranking: MRR@10, nDCG@10 and MAP (x100) over each query's positives and negatives. FILE:
    jsonl with query_id, query, positive_passages, negative_passages."""
    from workers.engines.registry import create_engine
    from workers.eval.inputs import read_reranking
    from workers.eval.report import describe_dataset, describe_engine
    from workers.eval.reranking import evaluate_reranking

    started = time.perf_counter()
    with reporting_errors():
        spec = make_spec(model, "rerank", backend, dtype, device, seqlens)
        queries = read_reranking(file, max_queries)
        engine = create_engine(spec)
        results = evaluate_reranking(engine, queries, instruction, chunk_rows=chunk_rows)
        settings = {"engine": describe_engine(engine), "instruction": instruction,
                    "dataset": describe_dataset(file, len(queries), max_queries), "chunk_rows": chunk_rows}
        finish("rerank", settings, results, started, out)


@app.command()
def agree(
    file: Path = typer.Argument(..., metavar="FILE", hidden=True),
    model: str = typer.Option(..., help="checkpoint folder or hub id (engine a, and b unless --model-b)", metavar="TEXT"),
    task: str = typer.Option("embed", help="embed | rerank", metavar="TEXT"),
    model_b: str = typer.Option(None, help="engine b's model, e.g. a compiled copy; default --model", metavar="TEXT"),
    backend_a: str = typer.Option(defaults.DEFAULT_BACKEND, metavar="TEXT"),
    dtype_a: str = typer.Option("fp32", help="engine a is the reference: fp32 by default; " + DTYPE_HELP, metavar="TEXT"),
    device_a: str = typer.Option(defaults.DEFAULT_DEVICE, metavar="TEXT"),
    backend_b: str = typer.Option(defaults.DEFAULT_BACKEND, help="any backend the registry knows", metavar="TEXT"),
    dtype_b: str = typer.Option(defaults.DEFAULT_DTYPE, help=DTYPE_HELP, metavar="TEXT"),
    device_b: str = typer.Option(defaults.DEFAULT_DEVICE, metavar="TEXT"),
    instruction: str = typer.Option(None, help="default: the symmetric one (embed), the rerank one (rerank)", metavar="TEXT"),
    no_instruction: bool = typer.Option(False, "--no-instruction", help="embed: the raw sentences", metavar=""),
    max_rows: int = typer.Option(None, help="only the first N pairs (embed) or queries (rerank)", metavar="N"),
    seqlens: str = typer.Option(SEQLENS_TEXT, metavar="TEXT"),
    chunk_rows: int = typer.Option(DEFAULT_CHUNK_ROWS, metavar="N"),
    out: Path = typer.Option(None, help=OUT_HELP, metavar="PATH"),
):
    """Backend agreement: the same inputs through engines a and b (cosines, score differences,
    rankings). FILE: embed, an STS jsonl; rerank, a reranking jsonl (MS MARCO format)."""
    from workers.eval.agreement import agree_on_reranking, agree_on_sts
    from workers.eval.inputs import EvalInputError, read_reranking, read_sts
    from workers.eval.report import describe_dataset

    started = time.perf_counter()
    with reporting_errors():
        if task not in ("embed", "rerank"):
            raise EvalInputError(f"--task must be embed or rerank, got {task!r}")
        specs = [make_spec(model, task, backend_a, dtype_a, device_a, seqlens),
                 make_spec(model_b or model, task, backend_b, dtype_b, device_b, seqlens)]
        if task == "embed":
            used_instruction = None if no_instruction else instruction or defaults.DEFAULT_SYMMETRIC_INSTRUCTION
            rows = read_sts(file, max_rows)
            engines, results = agree_on_sts(specs, rows, used_instruction, chunk_rows=chunk_rows)
        else:
            used_instruction = instruction or defaults.DEFAULT_RERANK_INSTRUCTION
            rows = read_reranking(file, max_rows)
            engines, results = agree_on_reranking(specs, rows, used_instruction, chunk_rows=chunk_rows)
        settings = {"task": task, "a": engines[0], "b": engines[1], "instruction": used_instruction,
                    "dataset": describe_dataset(file, len(rows), max_rows), "chunk_rows": chunk_rows}
        finish("agree", settings, results, started, out)


@app.command()
def dataset(
    name: str = typer.Argument(..., metavar="NAME", hidden=True),
    out: Path = typer.Option(..., help="the jsonl to write", metavar="PATH"),
    split: str = typer.Option(None, help="default: test (sts12, bq), dev (msmarco)", metavar="TEXT"),
    max_rows: int = typer.Option(None, help="stop after N rows (streamed: a large split is not downloaded whole)", metavar="N"),
):
    """Convert the public dataset NAME (sts12 | bq | msmarco) to the jsonl `workers eval` reads (needs
    `datasets` and network access)."""
    from workers.eval.public_datasets import export_dataset

    with reporting_errors():
        counts = export_dataset(name, out, split, max_rows)
    typer.echo(f"wrote {counts['rows']:,} rows of {counts['source']} to {out}")
    if counts["kind"] == "reranking" and counts["queries_without_negative"]:
        typer.echo(f"warning: {counts['queries_without_negative']:,} queries have no negative passage: they are "
                   "trivially ranked first; a reranking figure needs negatives (try another --split)", err=True)
