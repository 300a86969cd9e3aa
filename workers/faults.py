"""Fault injection for the crash tests: off unless QWEN3B_FAULTS names a point.

QWEN3B_FAULTS is a comma-separated list of POINT:ACTION[@SHARD]:
  after_write:kill             the worker SIGKILLs itself at that step of the commit
  before_compute:raise@SHARD   raises, only for that shard id
  before_commit:sleep=5        pauses 5 s (a zombie that wakes up late)
Points are workers.pipeline.FAULT_POINTS.
"""

import os
import signal
import time

ENV = "QWEN3B_FAULTS"


class InjectedFault(RuntimeError):
    pass


def inject(point: str, shard_id: str = "") -> None:
    spec = os.environ.get(ENV)
    if not spec:
        return
    for item in spec.split(","):
        where, _, action = item.partition(":")
        action, _, only_shard = action.partition("@")
        if where != point or (only_shard and only_shard != shard_id):
            continue
        if action == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        elif action.startswith("sleep="):
            time.sleep(float(action.split("=", 1)[1]))
        else:
            raise InjectedFault(f"injected fault at {point} of shard {shard_id}")
