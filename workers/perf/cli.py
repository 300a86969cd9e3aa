"""`workers bench`."""


def bench():
    """Measure throughput and latency of an engine (not written yet)."""
    raise SystemExit("workers bench: not written yet")
