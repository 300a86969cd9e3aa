"""The request driver: a bounded number of requests in flight, every one timed.

Maximum-throughput mode keeps `in_flight_limit` requests queued or running across the instances;
minimum-latency mode is the same loop with a limit of one. A request's latency is measured on the
driver's clock, from just before it is queued to the moment its result is received: what a client
of the instances sees, waiting included. The instance also reports its own compute time.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass

from workers.bench import stats


@dataclass(frozen=True)
class RequestRecord:
    request_id: int
    instance: int
    submitted_s: float   # driver clock
    received_s: float    # driver clock
    compute_s: float     # the instance's own time in the forward pass

    @property
    def latency_s(self) -> float:
        return self.received_s - self.submitted_s


def drive(n_requests: int, in_flight_limit: int, submit: Callable[[int], None],
          receive: Callable[[], tuple[int, int, float]], clock: Callable[[], float] = time.perf_counter,
          on_done: Callable[[RequestRecord], None] | None = None) -> list[RequestRecord]:
    """Submit requests 0..n-1, never more than in_flight_limit outstanding, until all are back.

    receive() blocks until some request finishes and returns (instance, request id, compute s);
    requests may finish in any order. Records come back in request-id order.
    """
    submitted: dict[int, float] = {}
    records: dict[int, RequestRecord] = {}
    next_id = 0
    while len(records) < n_requests:
        while next_id < n_requests and next_id - len(records) < in_flight_limit:
            submitted[next_id] = clock()
            submit(next_id)
            next_id += 1
        instance, request_id, compute_s = receive()
        record = RequestRecord(request_id, instance, submitted[request_id], clock(), compute_s)
        records[request_id] = record
        if on_done is not None:
            on_done(record)
    return [records[i] for i in range(n_requests)]


def measure(pool, mode: str, batch_size: int, seqlen: int, iterations: int, in_flight_limit: int,
            percentiles: tuple[float, ...], on_done=None) -> dict:
    """One (configuration, mode) measurement on a prepared pool: its figures as a JSON-ready dict."""
    limit = 1 if mode == "latency" else in_flight_limit
    pool.begin_serving()
    # No `finally`: after a failure the pool is closed (and its instances stopped) by its owner.
    records = drive(iterations, limit, pool.submit, pool.receive, on_done=on_done)
    pool.end_serving()
    return summarize_records(records, mode, batch_size, seqlen, limit, percentiles)


def summarize_records(records: list[RequestRecord], mode: str, batch_size: int, seqlen: int,
                      in_flight_limit: int, percentiles: tuple[float, ...]) -> dict:
    wall_s = max(r.received_s for r in records) - min(r.submitted_s for r in records)
    per_instance: dict[str, int] = {}
    for r in records:
        per_instance[str(r.instance)] = per_instance.get(str(r.instance), 0) + 1
    return {
        "mode": mode, "batch_size": batch_size, "seqlen": seqlen, "requests": len(records),
        "tokens_per_request": batch_size * seqlen, "in_flight_limit": in_flight_limit,
        "max_in_flight": stats.max_in_flight((r.submitted_s, r.received_s) for r in records),
        "wall_s": wall_s, **stats.throughput(len(records), batch_size, seqlen, wall_s),
        "latency_ms": stats.summarize([r.latency_s for r in records], percentiles),
        "compute_ms": stats.summarize([r.compute_s for r in records], percentiles),
        "requests_per_instance": dict(sorted(per_instance.items(), key=lambda kv: int(kv[0]))),
        "latencies_ms": [round(r.latency_s * 1e3, 4) for r in records],
    }
