"""Fault injection for the crash tests: off unless QWEN3B_FAULTS names a point.

QWEN3B_FAULTS is a comma-separated list of POINT:ACTION[@SHARD]:
  after_write:kill              the process SIGKILLs itself at that step
  before_compute:raise@SHARD    raises InjectedFault, only for that shard id
  before_commit:sleep=5         pauses 5 s (a zombie that wakes up late)
  after_write:kill-once         fires once per (point, shard) across processes and restarts,
                                using marker files under QWEN3B_FAULT_STATE (a folder)
Points: workers.pipeline.FAULT_POINTS in a worker; "compile" before each compile job; "enqueue" in the
producer, before each send.
"""

import os
import signal
import time
from pathlib import Path

ENV = "QWEN3B_FAULTS"
STATE_ENV = "QWEN3B_FAULT_STATE"


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
        if action.endswith("-once"):
            if not _first_time(point, shard_id):
                continue
            action = action[: -len("-once")]
        if action == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        elif action.startswith("sleep="):
            time.sleep(float(action.split("=", 1)[1]))
        else:
            raise InjectedFault(f"injected fault at {point} of shard {shard_id}")


def _first_time(point: str, shard_id: str) -> bool:
    folder = Path(os.environ.get(STATE_ENV) or "/tmp/qwen3b-faults")
    folder.mkdir(parents=True, exist_ok=True)
    try:
        (folder / f"{point}.{shard_id or 'any'}").open("x").close()
        return True
    except FileExistsError:
        return False
