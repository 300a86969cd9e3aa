"""Feeding an engine in chunks, so a long evaluation shows progress.

Texts go in sorted by length (as sentence-transformers' encode does): each chunk then holds
rows of similar length and pads little, whatever the chunk size. Outputs come back in the
caller's order; a row the engine could not score (a NaN batch, an over-long query) keeps its
error message and never enters a metric.
"""

import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

DEFAULT_CHUNK_ROWS = 256  # rows per engine call = per progress step; enough for full batches on a card
PLAIN_PROGRESS_EVERY_S = 30.0

Advance = Callable[[int], None]


@dataclass
class EngineRows:
    values: np.ndarray          # [n, dim] vectors or [n] scores, in the caller's order
    errors: list[str | None]    # per row; None where the row is usable

    @property
    def ok(self) -> np.ndarray:
        return np.array([e is None for e in self.errors], dtype=bool)

    def first_error(self) -> str | None:
        return next((e for e in self.errors if e is not None), None)


def embed_texts(engine, texts: Sequence[str], advance: Advance, dim: int | None = None,
                chunk_rows: int = DEFAULT_CHUNK_ROWS) -> EngineRows:
    dim = engine.check_dim(dim)
    vectors = np.zeros((len(texts), dim), dtype=np.float32)
    errors: list[str | None] = [None] * len(texts)
    for rows in chunk_by_length([len(t) for t in texts], chunk_rows):
        out = engine.embed([texts[i] for i in rows], dim=dim)
        vectors[rows] = out.vectors
        for i, error in zip(rows, out.errors):
            errors[i] = error
        advance(len(rows))
    return EngineRows(vectors, errors)


def rerank_pairs(engine, queries: Sequence[str], documents: Sequence[str], instruction: str, advance: Advance,
                 chunk_rows: int = DEFAULT_CHUNK_ROWS) -> EngineRows:
    scores = np.full(len(queries), np.nan, dtype=np.float32)
    errors: list[str | None] = [None] * len(queries)
    lengths = [len(q) + len(d) for q, d in zip(queries, documents)]
    for rows in chunk_by_length(lengths, chunk_rows):
        out = engine.rerank([queries[i] for i in rows], [documents[i] for i in rows], instruction=instruction)
        scores[rows] = out.scores
        for i, error in zip(rows, out.errors):
            errors[i] = error
        advance(len(rows))
    return EngineRows(scores, errors)


def chunk_by_length(lengths: Sequence[int], chunk_rows: int) -> list[np.ndarray]:
    """Row positions in chunks of at most chunk_rows, longest rows first (the slowest chunk
    comes first, so the ETA errs on the safe side)."""
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be at least 1, got {chunk_rows}")
    order = np.argsort(-np.asarray(lengths, dtype=np.int64), kind="stable")
    return [order[i:i + chunk_rows] for i in range(0, len(order), chunk_rows)]


@contextmanager
def progress_bar(description: str, total: int, console: Console | None = None):
    """Yields advance(n): a rich bar on stderr, so stdout keeps only the result table. Where
    stderr is not a terminal (a log file, nohup) rich draws nothing until the end, so a plain
    line is printed every PLAIN_PROGRESS_EVERY_S instead."""
    console = console or Console(stderr=True)
    if not console.is_terminal:
        yield plain_progress(description, total, console)
        return
    columns = (TextColumn("[bold]{task.description}"), BarColumn(bar_width=30), MofNCompleteColumn(),
               TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(description, total=total)
        yield lambda n: progress.advance(task, n)


def plain_progress(description: str, total: int, console: Console) -> Advance:
    started = last = time.monotonic()
    done = 0

    def advance(n: int) -> None:
        nonlocal done, last
        done += n
        now = time.monotonic()
        if now - last >= PLAIN_PROGRESS_EVERY_S or done >= total:
            last = now
            console.print(f"{description}: {done:,}/{total:,} ({100 * done / max(total, 1):.0f}%) "
                          f"after {now - started:.0f} s", highlight=False, markup=False)

    return advance


@contextmanager
def no_progress(description: str, total: int):
    """progress_bar's stand-in where nothing should be drawn (tests, library use)."""
    yield lambda n: None
