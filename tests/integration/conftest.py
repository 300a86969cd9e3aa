"""Real Redis (a private redis-server per test), real worker processes, a tiny model."""

from collections import Counter
from pathlib import Path

import pyarrow.dataset as ds
import pytest

from harness import cluster, corpora
from harness.outputs import wait_until_finished  # noqa: F401  (the tests import it from here)

# Quick retries, and a 1 s soft shutdown so that stopping an idle worker at teardown takes about
# a second, not the 10 s default (the SIGTERM test sets its own).
FAST_RETRIES = {"QWEN3B_RETRY_COUNTDOWN_S": "1", "QWEN3B_MAX_ATTEMPTS": "3", "QWEN3B_SOFT_SHUTDOWN_TIMEOUT_S": "1"}


def write_corpus(path: Path, n: int, task: str = "embed") -> list[int]:
    """n rows of real sentences (STS12 where it lies beside the checkout, else the standard library's
    docstrings: harness/corpora.py); ids 0..n-1."""
    return corpora.write_corpus(path, n, task)


def output_ids(out: Path) -> tuple[list, list]:
    data = ds.dataset(out / "data", format="parquet").to_table(columns=["id"]).column("id").to_pylist()
    rejects = []
    if (out / "rejects").is_dir():
        rejects = ds.dataset(out / "rejects", format="parquet").to_table(columns=["id"]).column("id").to_pylist()
    return data, rejects


def assert_every_id_exactly_once(input_ids: list, out: Path, missing_ok: set = frozenset()) -> None:
    """The independent checker: input ids vs output + reject ids. Nothing lost, nothing twice."""
    data, rejects = output_ids(out)
    seen = Counter([str(i) for i in data] + [str(i) for i in rejects])
    twice = {i: n for i, n in seen.items() if n > 1}
    assert not twice, f"{len(twice)} ids written more than once, e.g. {list(twice.items())[:5]}"
    expected = {str(i) for i in input_ids} - {str(i) for i in missing_ok}
    lost = expected - set(seen)
    assert not lost, f"{len(lost)} ids lost, e.g. {sorted(lost)[:5]}"
    extra = set(seen) - expected
    assert not extra, f"{len(extra)} ids that were not expected, e.g. {sorted(extra)[:5]}"


class Cluster:
    """Workers and producers of one test: they write only under the test's folder (and the job
    registry of common/job_registry.py lives there too) and read inputs there and in the model cache."""

    def __init__(self, redis_server: cluster.RedisServer, logdir: Path, root: Path | None = None):
        self.redis = redis_server
        self.logdir = logdir
        self.workers: list[cluster.Worker] = []
        self.roots = {"QWEN3B_OUTPUT_ROOT": str(root), "QWEN3B_INPUT_ROOTS": f"{root},{cluster.REPO_ROOT / '.cache'}"
                      } if root else {}

    @property
    def url(self) -> str:
        return self.redis.url

    def start_workers(self, n: int, model, task: str = "embed", env: dict | None = None, wait: bool = True,
                      pool: str = "prefork", backend: str = "torch", dtype: str = "fp32") -> list[cluster.Worker]:
        started = [cluster.start_worker(self.url, str(model), f"{task}-w{len(self.workers) + i}", self.logdir,
                                        task=task, env={**self.roots, **FAST_RETRIES, **(env or {})}, pool=pool,
                                        threads=1, backend=backend, dtype=dtype)
                   for i in range(n)]
        self.workers += started
        if wait:
            cluster.wait_for_workers(self.redis.client(), started)
        return started

    def producer(self, *args, timeout_s: float = 600, env: dict | None = None):
        return cluster.run_cli("producer", [str(a) for a in args], self.url, timeout_s,
                               {**self.roots, **FAST_RETRIES, **(env or {})})

    def logs(self) -> str:
        return "\n".join(f"--- {w.name}\n{w.log()[-4000:]}" for w in self.workers)

    def stop(self) -> None:
        for w in self.workers:
            w.stop(timeout_s=5)


@pytest.fixture
def redis_server(tmp_path):
    server = cluster.RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


@pytest.fixture
def local_cluster(redis_server, tmp_path):
    c = Cluster(redis_server, tmp_path / "logs", tmp_path)
    yield c
    c.stop()
