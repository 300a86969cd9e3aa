"""The compose file's topology without Docker: its Redis command line, its worker command lines."""

import secrets
import signal
from pathlib import Path

import pytest

from harness import cluster, compose

# The simulated device; a short soft shutdown, so stopping idle workers at the end takes a second.
SIMULATED = {"QWEN3B_SIM_BATCH_S": "0.02", "QWEN3B_SOFT_SHUTDOWN_TIMEOUT_S": "1"}


def compose_env(model: Path | str = "/models/Qwen3-Embedding-0.6B", **extra) -> dict:
    """What a user's .env holds, for a test: a fresh password, a model, this "host"."""
    return {"QWEN3B_REDIS_PASSWORD": secrets.token_hex(16), "QWEN3B_FLOWER_AUTH": "admin:" + secrets.token_hex(8),
            "QWEN3B_MODEL": str(model), "QWEN3B_DTYPE": "fp32", "QWEN3B_HOST_NAME": "testhost", **extra}


def on_this_machine(argv: list[str], **options: str) -> list[str]:
    """A compose worker command for this card-less machine: the simulated backend (real tokenising,
    batching, Parquet and commits; a sleep for the device) and any option replaced."""
    argv = compose.replace_option(argv, "--backend", "simulated")
    for flag, value in options.items():
        argv = compose.replace_option(argv, flag, value)
    return argv


@pytest.fixture
def compose_redis(tmp_path):
    """Redis started with docker-compose.yml's own redis command line."""
    spec = compose.load_compose(env=compose_env())
    server = compose.ComposeRedis(compose.command(spec, "redis"), tmp_path / "redis").start()
    yield server
    server.stop()


@pytest.fixture
def processes():
    """Processes a test starts (workers, Flower), all stopped together at the end."""
    started: list[cluster.Worker] = []
    yield started
    stop_all(started)


def stop_all(started: list[cluster.Worker], timeout_s: float = 8) -> None:
    """SIGTERM to all first, so their soft shutdowns run side by side, then SIGKILL what is left."""
    for p in started:
        if p.alive():
            p.process.send_signal(signal.SIGTERM)
    for p in started:
        p.stop(timeout_s=timeout_s)
