"""Showing a job's progress: a live bar on a terminal, a plain line every few seconds without one
(CI, log files), nothing for scripts. Rates are recent (common/rates.py), and so is the ETA;
rows move within a shard, from the workers' heartbeats, not only at commits."""

import sys
import time
from dataclasses import dataclass

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from common import defaults
from common.rates import RateWindow


@dataclass
class Snapshot:
    """One look at a job: rows committed, rows done including the shards in flight, tokens, failures."""

    rows_total: int
    rows_committed: int
    rows_live: int
    tokens_live: int
    shards_failed: int
    rows_saved: int = 0  # of the committed rows: copied (identical input, or --reuse), not computed


def eta_text(remaining_rows: int, rows_per_s: float) -> str:
    if remaining_rows <= 0:
        return "0s"
    if rows_per_s <= 0:
        return "?"
    return duration_text(remaining_rows / rows_per_s)


def duration_text(seconds: float) -> str:
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


class Reporter:
    """What a follower shows; this base shows nothing (scripts, `progress=False`)."""

    def __init__(self):
        self.window = RateWindow()
        self.started = time.monotonic()

    def start(self, label: str, total: int, unit: str = "rows") -> None:
        self.label, self.total, self.unit = label, total, unit

    def update(self, snap: Snapshot) -> None:
        self.rates = self.window.add(snap.rows_live, snap.tokens_live)

    def note(self, text: str) -> None:
        pass

    def stop(self) -> None:
        pass

    def rate_text(self, snap: Snapshot) -> str:
        rows_s, tokens_s = self.window.rates()
        failed = f"  {snap.shards_failed} shards failed" if snap.shards_failed else ""
        saved = (f"  {snap.rows_committed - snap.rows_saved:,} computed, {snap.rows_saved:,} saved"
                 if snap.rows_saved else "")
        return (f"{rows_s:,.0f} rows/s  {tokens_s:,.0f} tok/s  ETA {eta_text(snap.rows_total - snap.rows_live, rows_s)}"
                f"{saved}{failed}")


class BarReporter(Reporter):
    """A live bar on a terminal (rich), refreshed a few times a second."""

    def __init__(self, console: Console):
        super().__init__()
        self.console = console
        self.bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(bar_width=20), MofNCompleteColumn(),
                            TextColumn("{task.fields[unit]}  {task.fields[rate]}"), TimeElapsedColumn(),
                            console=console, refresh_per_second=4)

    def start(self, label: str, total: int, unit: str = "rows") -> None:
        super().start(label, total, unit)
        self.bar.start()
        self.task = self.bar.add_task(label, total=total, unit=unit, rate="")

    def update(self, snap: Snapshot) -> None:
        super().update(snap)
        self.bar.update(self.task, completed=snap.rows_live, rate=self.rate_text(snap) if self.unit == "rows" else "")

    def note(self, text: str) -> None:
        self.bar.console.print(text)

    def stop(self) -> None:
        self.bar.stop()


class LineReporter(Reporter):
    """Without a terminal: one whole line every `every_s` seconds (and the last one), never a bar
    cut at 80 columns in a log file."""

    def __init__(self, console: Console, every_s: float = defaults.PLAIN_PROGRESS_EVERY_S):
        super().__init__()
        self.console, self.every_s, self.printed_at, self.last = console, every_s, None, None

    def update(self, snap: Snapshot) -> None:
        super().update(snap)
        self.last = snap
        if self.printed_at is None or time.monotonic() - self.printed_at >= self.every_s:
            self.print_line(snap)

    def print_line(self, snap: Snapshot) -> None:
        self.printed_at = time.monotonic()
        share = f" ({snap.rows_live / snap.rows_total:.0%})" if snap.rows_total else ""
        rate = f", {self.rate_text(snap)}" if self.unit == "rows" else ""
        self.console.print(f"{self.label}: {snap.rows_live:,}/{snap.rows_total:,} {self.unit}{share}{rate}",
                           markup=False, highlight=False)

    def note(self, text: str) -> None:
        self.console.print(text)

    def stop(self) -> None:
        if self.last is not None and self.printed_at is not None and time.monotonic() - self.printed_at > 0.5:
            self.print_line(self.last)


def reporter_for(console: Console | None, enabled: bool = True) -> Reporter:
    if not enabled:
        return Reporter()
    console = console or Console(stderr=True, soft_wrap=True)
    return BarReporter(console) if console.is_terminal else LineReporter(console)


def summary_line(status, wall_s: float, rows_before: int) -> str:
    """The last line of every followed job: what it did while followed, how long that took, the
    average rate over that time (not a lifetime figure)."""
    done_now = status.rows_done - rows_before
    totals = f"{status.rows_done:,} rows ({status.rows_out:,} out, {status.rows_rejected:,} rejected)"
    if status.rows_deduplicated or status.rows_reused:
        totals += (f"; {status.rows_computed:,} computed, {status.rows_deduplicated:,} copied from identical rows, "
                   f"{status.rows_reused:,} reused")
    if done_now <= 0:
        return f"job {status.job_id} is {status.status}: {totals}; nothing was left to do"
    rate = done_now / wall_s if wall_s > 0 else 0.0
    return (f"job {status.job_id} {status.status}: {totals}; {done_now:,} rows in {duration_text(wall_s)}, "
            f"{rate:,.1f} rows/s on average")


def summary_table(status) -> Table:
    t = Table(title=f"job {status.job_id}: {status.status}", show_header=False)
    rows = [
        ("task / model", f"{status.task} / {status.model}"),
        ("queue", status.queue),
        ("rows", f"{status.rows_done:,} of {status.rows_total:,} done"),
        ("rows out / rejected", f"{status.rows_out:,} / {status.rows_rejected:,}"),
        ("rows computed / deduplicated / reused",
         f"{status.rows_computed:,} / {status.rows_deduplicated:,} / {status.rows_reused:,}"),
        ("tokens", f"{status.tokens:,}"),
        ("shards", f"{status.shards_committed} committed, {status.shards_quarantined} quarantined, "
                   f"{status.shards_pending} pending of {status.shards_total}"),
        ("results", status.data),
        ("rejects", status.rejects or "none: no row was rejected (rejects/ appears with the first one)"),
    ]
    for key, value in rows:
        t.add_row(key, value)
    for shard, reason in sorted(status.quarantined.items()):
        t.add_row(f"quarantined {shard}", reason)
    for worker, why in sorted(status.stalled.items()):
        t.add_row(f"waiting: {worker}", f"{why} (the store fails; it retries by itself)")
    return t


def stderr_console() -> Console:
    return Console(stderr=True, soft_wrap=True, file=sys.stderr)
