"""Fault injection for the crash tests and the chaos run: off unless QWEN3B_FAULTS names a point.

QWEN3B_FAULTS is a comma-separated list of POINT:ACTION[@SHARD]:
  after_write:kill              the process SIGKILLs itself at that step
  before_compute:raise@SHARD    raises InjectedFault, only for that shard id
  before_commit:wait            a barrier: writes <state>/<point>.<shard>.reached, then blocks until
                                <state>/<point>.<shard>.release or <state>/<point>.release exists
                                (see Barrier: tests hold a shard at a step without any sleep)
  after_write:stall=30          hangs 30 s inside C with the GIL released and the soft time limit's
                                signal blocked: a hung CUDA sync or NFS read (heartbeats go on)
  before_commit:sleep=5         pauses 5 s (the chaos run's slow shards)
  after_write:kill-once         fires once per (point, shard) across processes and restarts,
                                using marker files under QWEN3B_FAULT_STATE (a folder)
Points: workers.pipeline.FAULT_POINTS in a worker; "compile" before each compile job; "enqueue" in the
producer, before each send.
"""

import ctypes
import os
import signal
import time
from pathlib import Path

ENV = "QWEN3B_FAULTS"
STATE_ENV = "QWEN3B_FAULT_STATE"
DEFAULT_STATE = "/tmp/qwen3b-faults"
POLL_S = 0.05


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
        elif action == "wait":
            Barrier(state_folder()).hold(point, shard_id)
        elif action.startswith("stall="):
            stall_in_c(float(action.split("=", 1)[1]))
        elif action.startswith("sleep="):
            time.sleep(float(action.split("=", 1)[1]))
        else:
            raise InjectedFault(f"injected fault at {point} of shard {shard_id}")


def state_folder() -> Path:
    folder = Path(os.environ.get(STATE_ENV) or DEFAULT_STATE)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def stall_in_c(seconds: float) -> None:
    """Block in libc's sleep, which no Python signal handler can interrupt while SIGUSR1 (Celery's
    soft time limit) is blocked: only the hard time limit's SIGKILL ends it."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    libc = ctypes.CDLL(None)
    left = int(seconds)
    while left > 0:
        left = libc.sleep(left)


def _first_time(point: str, shard_id: str) -> bool:
    try:
        (state_folder() / f"{point}.{shard_id or 'any'}").open("x").close()
        return True
    except FileExistsError:
        return False


class Barrier:
    """The two sides of the `wait` action, through files in the fault state folder: a worker holds
    a shard at a point until the test releases it, and the test learns which shard got there."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)

    def hold(self, point: str, shard_id: str) -> None:
        (self.folder / f"{point}.{shard_id}.reached").touch()
        while not ((self.folder / f"{point}.{shard_id}.release").exists()
                   or (self.folder / f"{point}.release").exists()):
            time.sleep(POLL_S)

    def wait_reached(self, point: str, timeout_s: float = 120, count: int = 1) -> list[str]:
        """The shard ids held at `point`, once at least `count` are; TimeoutError after timeout_s."""
        deadline = time.monotonic() + timeout_s
        while True:
            held = sorted(p.name[len(point) + 1:-len(".reached")] for p in self.folder.glob(f"{point}.*.reached"))
            if len(held) >= count:
                return held
            if time.monotonic() > deadline:
                raise TimeoutError(f"no shard reached {point} within {timeout_s}s (held: {held})")
            time.sleep(POLL_S)

    def release(self, point: str, shard_id: str = "") -> None:
        """Let the shard (or, without one, every shard) held at `point` go on."""
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / (f"{point}.{shard_id}.release" if shard_id else f"{point}.release")).touch()
