"""Status figures and the live progress bar, read from the output store."""

import time
from collections import deque

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from common.jobstate import JobState


class RateWindow:
    """Rows/s and tokens/s over the last minute, so the rate follows the cluster as it changes."""

    def __init__(self, seconds: float = 60.0):
        self.samples = deque()
        self.seconds = seconds

    def add(self, rows: int, tokens: int) -> tuple[float, float]:
        now = time.monotonic()
        self.samples.append((now, rows, tokens))
        while len(self.samples) > 2 and now - self.samples[0][0] > self.seconds:
            self.samples.popleft()
        t0, r0, k0 = self.samples[0]
        dt = now - t0
        return ((rows - r0) / dt, (tokens - k0) / dt) if dt > 0 else (0.0, 0.0)


def eta_text(remaining_rows: int, rows_per_s: float) -> str:
    if remaining_rows <= 0:
        return "0s"
    if rows_per_s <= 0:
        return "?"
    s = int(remaining_rows / rows_per_s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def make_bar(console: Console) -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(bar_width=20), MofNCompleteColumn(),
                    TextColumn("rows  {task.fields[rate]}"), TimeElapsedColumn(), console=console,
                    refresh_per_second=4)


def rate_fields(state: JobState, window: RateWindow) -> str:
    rows_s, tokens_s = window.add(state.rows_done, state.tokens)
    failed = len(state.quarantined)
    return (f"{rows_s:,.0f} rows/s  {tokens_s:,.0f} tok/s  ETA {eta_text(state.plan.rows_total - state.rows_done, rows_s)}"
            f"  failed shards {failed}")


def summary_table(state: JobState) -> Table:
    plan = state.plan
    t = Table(title=f"job {plan.job_id}: {state.status}", show_header=False)
    rows = [
        ("task / model", f"{plan.spec.task} / {plan.spec.model.source}"),
        ("queue", plan.queue),
        ("rows", f"{state.rows_done:,} of {plan.rows_total:,} done"),
        ("rows out / rejected", f"{state.rows_out:,} / {state.rows_rejected:,}"),
        ("tokens", f"{state.tokens:,}"),
        ("shards", f"{len(state.commits)} committed, {len(state.quarantined)} quarantined, "
                   f"{len(state.pending)} pending of {len(plan.shards)}"),
    ]
    for key, value in rows:
        t.add_row(key, value)
    for sid, q in sorted(state.quarantined.items()):
        t.add_row(f"quarantined {sid}", q.reason)
    return t

