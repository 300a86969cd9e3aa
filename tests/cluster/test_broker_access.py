"""Reaching Redis as a cluster does: a wrong password is a clear message (never the password itself,
never a stack trace), workers and the producer work over TLS (rediss://) against a TLS-only Redis
started with docker-compose.redis-tls.yml's command line, and `workers health` tells a stale worker."""

import subprocess

import pytest

from common import defaults, keys
from tests.cluster.conftest import SIMULATED, compose_env
from tests.integration.conftest import assert_every_id_exactly_once, write_corpus
from harness import cluster, compose

pytestmark = pytest.mark.slow


def with_password(url: str, password: str) -> str:
    scheme, rest = url.split("://", 1)
    return f"{scheme}://:{password}@{rest.rsplit('@', 1)[-1]}"


@pytest.fixture
def tls_redis(tmp_path):
    """A throwaway CA and server certificate (the script users run), and Redis started with the TLS
    override's command line: TLS only, the plain port off."""
    tls = tmp_path / "tls"
    made = subprocess.run(["bash", str(compose.REPO_ROOT / "scripts" / "make_tls_certs.sh"), str(tls), "redis"],
                          capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    spec = compose.load_compose(compose.TLS_OVERRIDE_FILE, env=compose_env())
    server = compose.ComposeRedis(compose.command(spec, "redis"), tmp_path / "redis", tls_dir=tls).start()
    yield server
    server.stop()


def assert_clear_refusal(result: subprocess.CompletedProcess, server, wrong: str) -> None:
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"127.0.0.1:{server.port}" in result.stderr  # names the broker...
    assert "password" in result.stderr  # ...and what is wrong,
    assert wrong not in result.stdout + result.stderr  # without the password
    assert "Traceback" not in result.stderr


def test_a_worker_with_a_wrong_password_exits_with_a_clear_message_naming_the_broker(compose_redis, tiny_embed_model):
    url = with_password(compose_redis.url, "not-the-password-x7")
    result = cluster.run_cli("workers", ["start", "--model", str(tiny_embed_model), "--backend", "simulated"],
                             url, 60, SIMULATED)
    assert_clear_refusal(result, compose_redis, "not-the-password-x7")
    assert "refused the password" in result.stderr


def test_the_producer_with_a_wrong_password_fails_with_a_clear_message(compose_redis, tiny_embed_model, tmp_path):
    write_corpus(tmp_path / "c.jsonl", 10)
    url = with_password(compose_redis.url, "not-the-password-x7")
    submitted = cluster.run_cli("producer", ["submit", str(tmp_path / "c.jsonl"), "--model", str(tiny_embed_model),
                                             "--out", str(tmp_path / "out")], url, 60)
    assert_clear_refusal(submitted, compose_redis, "not-the-password-x7")
    assert not (tmp_path / "out").exists()  # refused before planning


def test_a_worker_and_the_producer_run_a_job_over_tls_against_a_tls_only_redis(tls_redis, processes, tiny_embed_model,
                                                                                  tmp_path):
    # Given a TLS-only Redis and a worker that trusts its CA
    assert tls_redis.url.startswith("rediss://")
    env = {**SIMULATED, "QWEN3B_BROKER_TLS_CA_FILE": str(tls_redis.tls_dir / "ca.crt")}
    processes.append(cluster.start_cli(["workers", "start", "--model", str(tiny_embed_model), "--backend", "simulated",
                                        "--dtype", "fp32", "--name", "tls-w0"], "tls-w0", tls_redis.url, tmp_path, env))
    cluster.wait_for_workers(tls_redis.client(), processes)
    # When a job is submitted over TLS
    ids = write_corpus(tmp_path / "c.jsonl", 300)
    done = cluster.run_cli("producer", ["submit", str(tmp_path / "c.jsonl"), "--model", str(tiny_embed_model), "--out",
                                        str(tmp_path / "out"), "--backend", "simulated", "--dtype", "fp32",
                                        "--shard-rows", "100", "--wait"], tls_redis.url, 120, env)
    # Then it completes with every row exactly once
    assert done.returncode == 0, done.stderr + processes[0].log()[-3000:]
    assert_every_id_exactly_once(ids, tmp_path / "out")


def test_a_worker_that_does_not_trust_the_brokers_certificate_exits_with_a_tls_message(tls_redis, tiny_embed_model):
    # No CA file: the system's CAs do not know the throwaway CA, and certificates are always checked.
    result = cluster.run_cli("workers", ["start", "--model", str(tiny_embed_model), "--backend", "simulated"],
                             tls_redis.url, 60, SIMULATED)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "TLS with Redis at rediss://:***@127.0.0.1" in result.stderr and "QWEN3B_BROKER_TLS_CA_FILE" in result.stderr
    assert "Traceback" not in result.stderr


def test_workers_health_fails_for_a_worker_without_a_fresh_heartbeat(compose_redis):
    client = compose_redis.client()
    missing = cluster.run_cli("workers", ["health", "--name", "gone@host1"], compose_redis.url, 60)
    assert missing.returncode == 1 and "no heartbeat from gone@host1" in missing.stderr
    # A key's remaining TTL tells when it was written: this one 20 s ago, past the 15 s allowed.
    client.set(keys.worker_heartbeat("stuck@host1"), '{"device": "cuda:0"}', ex=defaults.WORKER_HEARTBEAT_TTL_S - 20)
    stale = cluster.run_cli("workers", ["health", "--name", "stuck@host1"], compose_redis.url, 60)
    assert stale.returncode == 1, stale.stdout
    client.set(keys.worker_heartbeat("fresh@host1"), '{"device": "cuda:0"}', ex=defaults.WORKER_HEARTBEAT_TTL_S - 1)
    fresh = cluster.run_cli("workers", ["health", "--name", "fresh@host1"], compose_redis.url, 60)
    assert fresh.returncode == 0 and "healthy: fresh@host1 on cuda:0" in fresh.stdout, fresh.stderr
