"""Recent rates: rows/s and tokens/s over the last few seconds, not lifetime averages that count
idle time. Used by the workers' heartbeats and the producer's progress display alike."""

import time
from collections import deque

from common import defaults


class RateWindow:
    """Feed it running totals; it answers the rate over the last `seconds`."""

    def __init__(self, seconds: float = defaults.RATE_WINDOW_S, clock=time.monotonic):
        self.seconds, self.clock = seconds, clock
        self.samples: deque[tuple[float, float, float]] = deque()

    def add(self, rows: float, tokens: float) -> tuple[float, float]:
        """Record the totals now; (rows/s, tokens/s) over the window."""
        now = self.clock()
        self.samples.append((now, rows, tokens))
        while len(self.samples) > 2 and now - self.samples[1][0] >= self.seconds:
            self.samples.popleft()
        return self.rates()

    def rates(self) -> tuple[float, float]:
        if len(self.samples) < 2:
            return 0.0, 0.0
        (t0, r0, k0), (t1, r1, k1) = self.samples[0], self.samples[-1]
        dt = t1 - t0
        return ((r1 - r0) / dt, (k1 - k0) / dt) if dt > 0 else (0.0, 0.0)
