"""Fault injection for the crash tests: off unless QWEN3B_FAULTS names a point.

QWEN3B_FAULTS="after_write:kill" makes a worker SIGKILL itself at that step of the commit;
"before_compute:raise" raises instead; ":sleep=S" pauses S seconds (a zombie that wakes late).
An optional "@SHARD" suffix limits the fault to one shard id (set via QWEN3B_FAULT_SHARD).
"""

import os
import signal
import time

ENV = "QWEN3B_FAULTS"


class InjectedFault(RuntimeError):
    pass


def inject(point: str) -> None:
    spec = os.environ.get(ENV)
    if not spec:
        return
    for item in spec.split(","):
        where, _, action = item.partition(":")
        if where != point:
            continue
        if action == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        elif action.startswith("sleep="):
            time.sleep(float(action.split("=", 1)[1]))
        else:
            raise InjectedFault(f"injected fault at {point}")
