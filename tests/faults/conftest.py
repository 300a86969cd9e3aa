"""Fault tests: a private redis-server per test, real worker processes (the simulated backend:
real tokenising, batching, Parquet and commits, a short sleep for the device), and fault points
that hold a shard at a step until the test releases it (common.faults.Barrier), never sleeps."""

import time

from celery import Celery
from kombu import Exchange, Queue

from common.faults import Barrier
from common.io.store import OutputStore
from tests.integration.conftest import local_cluster, redis_server  # noqa: F401  (shared fixtures)
from harness import cluster

SIM = {"QWEN3B_SIM_BATCH_S": "0.02"}
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
