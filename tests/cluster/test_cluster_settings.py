"""Workers of one cluster share their reliability settings: the first registers them in Redis, a
worker with other values refuses to start, and `producer cluster-settings --reset` changes them."""

import json

import pytest

from common import keys
from common.cluster_settings import ClusterSettingsMismatch, register_or_check
from common.settings import load_settings
from tests.cluster.conftest import SIMULATED
from harness import cluster

pytestmark = pytest.mark.slow


def start_worker_cli(url: str, model, name: str, env: dict, timeout_s: float = 60):
    """`workers start` run to its end: only a worker that refuses to start ends by itself."""
    return cluster.run_cli("workers", ["start", "--model", str(model), "--backend", "simulated", "--dtype", "fp32",
                                       "--name", name], url, timeout_s, {**SIMULATED, **env})


def test_a_worker_with_other_reliability_settings_refuses_to_start_naming_each_difference(compose_redis,
                                                                                          tiny_embed_model):
    # Given a cluster whose first worker registered the default settings
    client = compose_redis.client()
    register_or_check(client, load_settings({}), "first@host1")
    # When a worker starts with a shorter visibility timeout and another attempt cap
    refused = start_worker_cli(compose_redis.url, tiny_embed_model, "odd@host2",
                               {"QWEN3B_VISIBILITY_TIMEOUT_S": "4000", "QWEN3B_MAX_ATTEMPTS": "5"})
    # Then it exits before Celery starts, naming each differing setting with both values and what to do
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "odd@host2 refuses to start" in refused.stderr and "registered for this cluster (by first@host1" in refused.stderr
    assert "visibility_timeout: this process 4000, cluster 3600 (QWEN3B_VISIBILITY_TIMEOUT_S)" in refused.stderr
    assert "max_attempts: this process 5, cluster 3 (QWEN3B_MAX_ATTEMPTS)" in refused.stderr
    assert "task_time_limit" not in refused.stderr  # only what differs
    assert "producer cluster-settings --reset" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert not client.exists(keys.worker_heartbeat("odd@host2"))


def test_a_worker_with_the_same_settings_joins_the_registration_of_the_first(compose_redis):
    client = compose_redis.client()
    first = register_or_check(client, load_settings({"QWEN3B_MAX_ATTEMPTS": "4"}), "a@host1")
    same = register_or_check(client, load_settings({"QWEN3B_MAX_ATTEMPTS": "4"}), "b@host2")
    assert same["registered_by"] == first["registered_by"] == "a@host1"
    with pytest.raises(ClusterSettingsMismatch, match="max_attempts: this process 3, cluster 4"):
        register_or_check(client, load_settings({}), "c@host3")


def test_cluster_settings_are_changed_deliberately_with_reset_once_no_worker_is_alive(compose_redis):
    # Given registered settings and a live worker (its heartbeat)
    client, url = compose_redis.client(), compose_redis.url
    register_or_check(client, load_settings({}), "first@host1")
    client.set(keys.worker_heartbeat("first@host1"), json.dumps({"device": "cpu"}), ex=30)
    shown = cluster.run_cli("producer", ["cluster-settings"], url, 60, {"QWEN3B_VISIBILITY_TIMEOUT_S": "7200"})
    assert shown.returncode == 0, shown.stderr
    assert "registered by first@host1" in shown.stderr
    assert any("visibility_timeout" in line and "3600" in line and "7200" in line for line in shown.stdout.splitlines())
    # When a reset is asked while that worker is alive, it is refused, naming the worker
    refused = cluster.run_cli("producer", ["cluster-settings", "--reset"], url, 60)
    assert refused.returncode == 2 and "first@host1" in refused.stderr and "--force" in refused.stderr
    assert client.exists(keys.cluster_settings())
    # Then, once the worker is gone, the reset clears them and the next worker registers its own
    client.delete(keys.worker_heartbeat("first@host1"))
    reset = cluster.run_cli("producer", ["cluster-settings", "--reset"], url, 60)
    assert reset.returncode == 0 and "cleared" in reset.stderr, reset.stderr
    record = register_or_check(client, load_settings({"QWEN3B_VISIBILITY_TIMEOUT_S": "7200"}), "next@host1")
    assert record["registered_by"] == "next@host1" and record["settings"]["visibility_timeout"] == 7200
