"""Prove it loses nothing: killed workers, crashes at each commit step, racing and zombie attempts,
SIGTERM, time limits and poison shards (issue 4). Each test ends with the independent checker.

Delivery and commit semantics do not depend on the model, so these workers run the simulated
backend (real tokenisation and batching, no torch): they start in a second, which keeps the
suite short. The torch path through the same worker code is covered in tests/integration.
"""

import signal
import time

import pytest

from common.io.store import OutputStore
from common.jobstate import read_state
from workers import cluster
from workers.pipeline import FAULT_POINTS
from tests.integration.conftest import assert_every_id_exactly_once, wait_until_finished, write_corpus

pytestmark = pytest.mark.slow


SIM = {"QWEN3B_SIM_BATCH_S": "0.02"}


def start(c, n, model, env=None):
    return c.start_workers(n, model, backend="simulated", env={**SIM, **(env or {})})


def submit(c, model, corpus, out, shard_rows, *extra, env=None):
    result = c.producer("submit", corpus, "--model", model, "--out", out, "--dtype", "fp32", "--backend", "simulated",
                        "--shard-rows", shard_rows, *extra, env=env)
    assert result.returncode in (0, 1), result.stderr
    return result


def wait_for_busy_worker(c, worker, timeout_s=60) -> str:
    """The shard id the worker is running, once it is running one."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        beat = cluster.heartbeat(c.redis.client(), worker.name)
        if beat and beat["current_shard"]:
            return beat["current_shard"]
        time.sleep(0.1)
    raise TimeoutError(f"{worker.name} never started a shard:\n{worker.log()[-3000:]}")


def test_a_worker_child_killed_mid_shard_has_its_shard_redelivered_and_committed_once(local_cluster, tiny_embed_model,
                                                                                     tmp_path):
    # Given a worker that is slow on every shard (so it can be caught mid-shard)
    ids = write_corpus(tmp_path / "c.jsonl", 600)
    [worker] = start(local_cluster, 1, tiny_embed_model, env={"QWEN3B_FAULTS": "after_compute:sleep=2"})
    submit(local_cluster, tiny_embed_model, tmp_path / "c.jsonl", tmp_path / "out", 200)
    # When its pool child is SIGKILLed in the middle of a shard
    shard = wait_for_busy_worker(local_cluster, worker)
    children = worker.pids()[1:]
    assert children, "the prefork pool child was not found"
    for pid in children:
        import os
        os.kill(pid, signal.SIGKILL)
    # Then the shard comes back (reject on worker lost), is committed once, and nothing is lost
    state = wait_until_finished(tmp_path / "out", timeout_s=180)
    assert shard in state.commits
    assert_every_id_exactly_once(ids, tmp_path / "out")
    assert "WorkerLostError" in worker.log() or "Process 'ForkPoolWorker" in worker.log()


def test_a_lost_node_has_its_shard_redelivered_after_the_visibility_timeout(local_cluster, tiny_embed_model, tmp_path):
    # Given a short visibility timeout shared by all workers, and one worker that will vanish mid-shard
    env = {"QWEN3B_VISIBILITY_TIMEOUT_S": "8", "QWEN3B_TASK_TIME_LIMIT_S": "6", "QWEN3B_TASK_SOFT_TIME_LIMIT_S": "5",
           "QWEN3B_FAULTS": "after_compute:sleep=3"}
    ids = write_corpus(tmp_path / "c.jsonl", 400)
    [doomed] = start(local_cluster, 1, tiny_embed_model, env=env)
    submit(local_cluster, tiny_embed_model, tmp_path / "c.jsonl", tmp_path / "out", 200, env=env)
    shard = wait_for_busy_worker(local_cluster, doomed)
    # When its whole process tree is killed at once (nobody is left to requeue anything)
    doomed.signal_all(signal.SIGKILL)
    killed_at = time.monotonic()
    start(local_cluster, 1, tiny_embed_model, env={k: v for k, v in env.items() if k != "QWEN3B_FAULTS"})
    # Then a survivor gets the shard back once the visibility timeout has passed, and the job completes
    state = wait_until_finished(tmp_path / "out", timeout_s=120)
    assert state.commits[shard].worker != doomed.name
    assert time.monotonic() - killed_at >= 8 - 1
    assert_every_id_exactly_once(ids, tmp_path / "out")


@pytest.mark.parametrize("point", FAULT_POINTS)
def test_a_crash_at_any_step_of_the_commit_loses_nothing(local_cluster, tiny_embed_model, tmp_path, point):
    # Given a worker that SIGKILLs itself once per shard at this step of the commit
    ids = write_corpus(tmp_path / "c.jsonl", 400)
    env = {"QWEN3B_FAULTS": f"{point}:kill-once", "QWEN3B_FAULT_STATE": str(tmp_path / "faults")}
    start(local_cluster, 1, tiny_embed_model, env=env)
    submit(local_cluster, tiny_embed_model, tmp_path / "c.jsonl", tmp_path / "out", 200)
    # Then every shard is still committed exactly once, with no leftover attempt files
    state = wait_until_finished(tmp_path / "out", timeout_s=180)
    assert len(state.commits) == 2 and not state.quarantined
    assert_every_id_exactly_once(ids, tmp_path / "out")
    assert len(list((tmp_path / "faults").iterdir())) == 2  # the crash really happened, once per shard
    leftovers = [p for p in (tmp_path / "out" / "_tmp").rglob("*") if p.is_file()] if (
        tmp_path / "out" / "_tmp").exists() else []
    assert not leftovers, leftovers


def test_racing_duplicate_deliveries_commit_once_and_a_late_zombie_changes_nothing(local_cluster, tiny_embed_model,
                                                                                   tmp_path):
    # Given two workers, one of which pauses before every commit, and every shard enqueued twice
    ids = write_corpus(tmp_path / "c.jsonl", 400)
    out = tmp_path / "out"
    [zombie] = start(local_cluster, 1, tiny_embed_model, env={"QWEN3B_FAULTS": "before_commit:sleep=8"})
    start(local_cluster, 1, tiny_embed_model)
    for _ in range(2):
        submit(local_cluster, tiny_embed_model, tmp_path / "c.jsonl", out, 200)
    # When the other worker commits while the zombie sleeps, and the zombie then wakes up and commits too
    state = wait_until_finished(out, timeout_s=120)
    committed = {sid: (c.attempt, (out / c.data_file).stat().st_ino, (out / c.data_file).read_bytes())
                 for sid, c in state.commits.items()}
    deadline = time.monotonic() + 60
    while "'lost_race'" not in zombie.log() and time.monotonic() < deadline:
        time.sleep(0.2)
    # Then exactly one commit per shard stands, the committed files are unchanged, the loser left nothing
    assert "'lost_race'" in zombie.log(), local_cluster.logs()
    after = read_state(OutputStore(out)).commits
    assert {sid: (c.attempt, (out / c.data_file).stat().st_ino, (out / c.data_file).read_bytes())
            for sid, c in after.items()} == committed
    assert not any(p.is_file() for p in (out / "_tmp").rglob("*")) if (out / "_tmp").exists() else True
    assert_every_id_exactly_once(ids, out)


def test_sigterm_requeues_the_running_shard_within_seconds(local_cluster, tiny_embed_model, tmp_path):
    # Given a long visibility timeout, and a worker deep in a long shard
    env = {"QWEN3B_SOFT_SHUTDOWN_TIMEOUT_S": "2", "QWEN3B_FAULTS": "after_compute:sleep=60"}
    ids = write_corpus(tmp_path / "c.jsonl", 200)
    [deployed] = start(local_cluster, 1, tiny_embed_model, env=env)
    submit(local_cluster, tiny_embed_model, tmp_path / "c.jsonl", tmp_path / "out", 200)
    shard = wait_for_busy_worker(local_cluster, deployed)
    # When it gets SIGTERM (a deploy), and a replacement starts
    deployed.process.send_signal(signal.SIGTERM)
    sent_at = time.monotonic()
    deployed.process.wait(30)
    start(local_cluster, 1, tiny_embed_model)
    # Then the shard is done by the replacement well before the visibility timeout (3600 s)
    state = wait_until_finished(tmp_path / "out", timeout_s=90)
    assert state.commits[shard].worker != deployed.name
    assert time.monotonic() - sent_at < 90
    assert_every_id_exactly_once(ids, tmp_path / "out")


def test_a_shard_over_its_time_limit_is_quarantined_with_its_reason(local_cluster, tiny_embed_model, tmp_path):
    env = {"QWEN3B_TASK_TIME_LIMIT_S": "4", "QWEN3B_TASK_SOFT_TIME_LIMIT_S": "2", "QWEN3B_VISIBILITY_TIMEOUT_S": "9",
           "QWEN3B_FAULTS": "after_compute:sleep=30@00000-000000000200"}
    ids = write_corpus(tmp_path / "c.jsonl", 400)
    start(local_cluster, 1, tiny_embed_model, env=env)
    result = submit(local_cluster, tiny_embed_model, tmp_path / "c.jsonl", tmp_path / "out", 200, "--wait", env=env)
    assert result.returncode == 1, result.stderr + local_cluster.logs()
    state = read_state(OutputStore(tmp_path / "out"))
    assert state.success.status == "completed_with_failures"
    assert "SoftTimeLimitExceeded" in state.quarantined["00000-000000000200"].reason
    assert_every_id_exactly_once(ids, tmp_path / "out", missing_ok=set(range(200, 400)))


def test_a_shard_that_kills_its_worker_every_time_is_quarantined_after_the_cap(local_cluster, tiny_embed_model,
                                                                              tmp_path):
    poison = "00000-000000000000"
    ids = write_corpus(tmp_path / "c.jsonl", 400)
    start(local_cluster, 1, tiny_embed_model, env={"QWEN3B_FAULTS": f"before_compute:kill@{poison}"})
    result = submit(local_cluster, tiny_embed_model, tmp_path / "c.jsonl", tmp_path / "out", 200, "--wait")
    assert result.returncode == 1, result.stderr + local_cluster.logs()
    state = read_state(OutputStore(tmp_path / "out"))
    assert list(state.quarantined) == [poison]
    assert "worker lost 3 times" in state.quarantined[poison].reason
    assert poison in result.stderr
    assert_every_id_exactly_once(ids, tmp_path / "out", missing_ok=set(range(0, 200)))
