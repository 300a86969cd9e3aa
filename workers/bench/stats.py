"""Latency and throughput figures from timed requests. Pure Python: the CLI imports it cheaply."""

import math
from collections.abc import Iterable, Sequence

from workers.bench.errors import BenchError


def percentile(samples: Sequence[float], p: float) -> float:
    """The p-th percentile by linear interpolation between closest ranks, at rank p/100 * (n - 1):
    numpy's default ("linear") method, so figures compare with anyone's numpy.percentile."""
    if not samples:
        raise BenchError("no samples to take a percentile of")
    if not 0 <= p <= 100:
        raise BenchError(f"percentile {p} is outside 0..100")
    ordered = sorted(samples)
    rank = p / 100 * (len(ordered) - 1)
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def percentile_key(p: float) -> str:
    """p50, p99, p99.9: the JSON and table name of a percentile."""
    return f"p{p:g}"


def summarize(samples_s: Sequence[float], percentiles: Iterable[float]) -> dict[str, float]:
    """avg, min, max and the requested percentiles of durations in seconds, in milliseconds."""
    if not samples_s:
        raise BenchError("no timed requests to summarise; raise --iterations")
    ms = [s * 1e3 for s in samples_s]
    out = {"avg": sum(ms) / len(ms), "min": min(ms), "max": max(ms)}
    for p in percentiles:
        out[percentile_key(p)] = percentile(ms, p)
    return out


def throughput(requests: int, batch_size: int, seqlen: int, wall_s: float) -> dict[str, float]:
    """Requests, sequences and tokens per second; every request is batch_size x seqlen real tokens."""
    if wall_s <= 0:
        raise BenchError(f"a measurement took {wall_s} s: the clock did not advance")
    return {"requests_per_s": requests / wall_s,
            "sequences_per_s": requests * batch_size / wall_s,
            "tokens_per_s": requests * batch_size * seqlen / wall_s}


def max_in_flight(intervals: Iterable[tuple[float, float]]) -> int:
    """The most (submitted, received) intervals open at one instant. A request received at the
    same instant another is submitted is counted as gone first: the driver submits the next
    request only after it has received one."""
    events = []
    for start, end in intervals:
        events += [(start, 1), (end, -1)]
    events.sort(key=lambda e: (e[0], e[1]))  # -1 before +1 at equal times
    most = open_now = 0
    for _, step in events:
        open_now += step
        most = max(most, open_now)
    return most
