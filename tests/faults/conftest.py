"""Fault tests: a private redis-server per test, real worker processes (the simulated backend:
real tokenising, batching, Parquet and commits, a short sleep for the device), and fault points
that hold a shard at a step until the test releases it (common.faults.Barrier), never sleeps."""

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from celery import Celery
from kombu import Exchange, Queue

from common.faults import Barrier
from common.io.store import OutputStore
from harness import cluster
from tests.integration.conftest import local_cluster, redis_server  # noqa: F401  (shared fixtures)

SIM = {"QWEN3B_SIM_BATCH_S": "0.02"}
FAKES = Path(__file__).resolve().parents[1] / "fakes"
# Workers that count as gone after 6 s without a heartbeat, checked every 2 s: the self-healing
# tests then take seconds. The test of the 60 s promise runs with the defaults.
QUICK_HEALING = {"QWEN3B_HEARTBEAT_TTL_S": "6", "QWEN3B_RECONCILE_INTERVAL_S": "2"}


def faults(barrier: Barrier, spec: str) -> dict:
    return {"QWEN3B_FAULTS": spec, "QWEN3B_FAULT_STATE": str(barrier.folder)}


def start(c, n, model, env=None):
    return c.start_workers(n, model, backend="simulated", env={**SIM, **(env or {})})


def submit(c, model, corpus, out, shard_rows, *extra, env=None):
    result = c.producer("submit", corpus, "--model", model, "--out", out, "--dtype", "fp32", "--backend", "simulated",
                        "--shard-rows", shard_rows, *extra, env=env)
    assert result.returncode in (0, 1), result.stderr
    return result


def wait_for(condition, timeout_s: float, what: str, poll_s: float = 0.1):
    """condition()'s first truthy value, polled until timeout_s; TimeoutError naming `what`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(poll_s)
    raise TimeoutError(f"{what} did not happen within {timeout_s}s")


def committed_by(out, shard_id: str) -> str | None:
    record = OutputStore(out).load_commit(shard_id)
    return record.worker if record else None


def busy_shard(c, worker, timeout_s=60) -> str:
    """The shard id the worker is running, once it is running one (from its heartbeat)."""
    return wait_for(lambda: (cluster.heartbeat(c.redis.client(), worker.name) or {}).get("current_shard"), timeout_s,
                    f"{worker.name} starting a shard")


def send_through_plain_celery(url: str, queue: str, task: str, kwargs: dict) -> None:
    """Publish a message the way anyone with access to Redis could: a stock Celery client, nothing of ours."""
    app = Celery(broker=url)
    target = Queue(queue, Exchange(queue, type="direct"), routing_key=queue)
    app.send_task(task, kwargs=kwargs, queue=target, declare=[target])
    app.close()


@contextlib.contextmanager
def fuse_mount(fake: str, backing: Path, mount: Path, *extra: str, what: str):
    """`mount` as a FUSE mount of `backing` served by tests/fakes/<fake> (needs root, /dev/fuse and
    libfuse2, which `make test` installs); unmounted afterwards, lazily if it is still busy."""
    backing.mkdir()
    mount.mkdir()
    fs = subprocess.Popen([sys.executable, str(FAKES / fake), str(backing), str(mount), *extra],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 20
    while not os.path.ismount(mount):
        if fs.poll() is not None or time.monotonic() > deadline:
            fs.kill()
            pytest.fail(f"could not mount the {what} FUSE file system (root, /dev/fuse and libfuse2 needed): "
                        f"{fs.stdout.read().decode(errors='replace')[-2000:]}")
        time.sleep(0.05)
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)
        fs.terminate()
        fs.wait(10)
        if os.path.ismount(mount):
            subprocess.run(["umount", "-l", str(mount)], capture_output=True)
