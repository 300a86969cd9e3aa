"""Prove it loses nothing: killed workers, crashes at each commit step, racing and zombie attempts,
SIGTERM, time limits and poison shards (issue 4). Each test ends with the independent checker.

Delivery and commit semantics do not depend on the model, so these workers run the simulated
backend (real tokenisation and batching, no torch): they start in a second, which keeps the
suite short. The torch path through the same worker code is covered in tests/integration.
"""

import os
import signal
import time

import pytest

from common.dispatch import shard_message
from common.io.plans import load_plan
from common.io.store import OutputStore
from harness.outputs import read_records
from tests.faults.conftest import faults, send_through_plain_celery, start, submit, wait_for
from tests.integration.conftest import assert_every_id_exactly_once, wait_until_finished, write_corpus
from workers.pipeline import FAULT_POINTS

pytestmark = pytest.mark.slow


def test_a_worker_child_killed_mid_shard_has_its_shard_redelivered_and_committed_once(local_cluster, tiny_embed_model,
                                                                                     tmp_path, barrier):
    # Given a worker held in the middle of its first shard
    ids = write_corpus(tmp_path / "c.jsonl", 600)
    [worker] = start(local_cluster, 1, tiny_embed_model,
                     env=faults(barrier, "after_compute:wait-once@00000000-000000000000"))
    submit(local_cluster, tiny_embed_model, tmp_path / "c.jsonl", tmp_path / "out", 200)
    [shard] = barrier.wait_reached("after_compute")
    # When its pool child is SIGKILLed there
    children = worker.pids()[1:]
    assert children, "the prefork pool child was not found"
    for pid in children:
        os.kill(pid, signal.SIGKILL)
    # Then the shard comes back (reject on worker lost), is committed once, and nothing is lost
    state = wait_until_finished(tmp_path / "out", timeout_s=180)
    assert shard in state.commits
    assert_every_id_exactly_once(ids, tmp_path / "out")
    assert "WorkerLostError" in worker.log() or "Process 'ForkPoolWorker" in worker.log()


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
                                                                                   tmp_path, barrier):
    # Given a worker held just before committing a shard (a zombie to be)
    ids = write_corpus(tmp_path / "c.jsonl", 400)
    out = tmp_path / "out"
    [zombie] = start(local_cluster, 1, tiny_embed_model, env=faults(barrier, "before_commit:wait"))
    submit(local_cluster, tiny_embed_model, tmp_path / "c.jsonl", out, 200)
    [shard] = barrier.wait_reached("before_commit")
    # When a duplicate of its message, sent through a plain Celery client, is committed by another worker
    plan = load_plan(OutputStore(out))
    duplicate = shard_message(plan, str(OutputStore(out).root), plan.shard(shard))
    send_through_plain_celery(local_cluster.url, plan.queue, "embed.shard", duplicate.model_dump())
    start(local_cluster, 1, tiny_embed_model)
    wait_for(lambda: OutputStore(out).load_commit(shard), 60, "the duplicate's commit")
    winner = OutputStore(out).load_commit(shard)
    committed_bytes = (out / winner.data_file).read_bytes()
    # and the zombie then wakes up and commits too
    barrier.release("before_commit")
    state = wait_until_finished(out, timeout_s=120)
    wait_for(lambda: "'lost_race'" in zombie.log(), 60, "the zombie's late commit")
    # Then exactly one commit stands for the shard, its file is unchanged, and the loser left nothing
    assert winner.worker != zombie.name
    assert state.commits[shard].attempt == winner.attempt
    assert (out / winner.data_file).read_bytes() == committed_bytes
    leftovers = [p for p in (out / "_tmp").rglob("*") if p.is_file()] if (out / "_tmp").exists() else []
    assert not leftovers, leftovers
    assert_every_id_exactly_once(ids, out)


def test_sigterm_requeues_the_running_shard_within_seconds(local_cluster, tiny_embed_model, tmp_path, barrier):
    # Given a long visibility timeout, and a worker held in the middle of a shard
    env = {"QWEN3B_SOFT_SHUTDOWN_TIMEOUT_S": "2", **faults(barrier, "after_compute:wait")}
    ids = write_corpus(tmp_path / "c.jsonl", 200)
    [deployed] = start(local_cluster, 1, tiny_embed_model, env=env)
    submit(local_cluster, tiny_embed_model, tmp_path / "c.jsonl", tmp_path / "out", 200)
    [shard] = barrier.wait_reached("after_compute")
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


def test_a_shard_over_its_soft_time_limit_is_quarantined_with_its_reason(local_cluster, tiny_embed_model, tmp_path,
                                                                        barrier):
    # Given a shard held (in Python, where the soft limit's exception lands) past the soft time limit
    env = {"QWEN3B_TASK_TIME_LIMIT_S": "4", "QWEN3B_TASK_SOFT_TIME_LIMIT_S": "2", "QWEN3B_VISIBILITY_TIMEOUT_S": "9",
           **faults(barrier, "after_compute:wait@00000000-000000000200")}
    ids = write_corpus(tmp_path / "c.jsonl", 400)
    start(local_cluster, 1, tiny_embed_model, env=env)
    result = submit(local_cluster, tiny_embed_model, tmp_path / "c.jsonl", tmp_path / "out", 200, "--wait", env=env)
    assert result.returncode == 1, result.stderr + local_cluster.logs()
    state = read_records((tmp_path / "out"))
    assert state.success.status == "completed_with_failures"
    assert "SoftTimeLimitExceeded" in state.quarantined["00000000-000000000200"].reason
    assert_every_id_exactly_once(ids, tmp_path / "out", missing_ok=set(range(200, 400)))


def test_a_shard_that_kills_its_worker_every_time_is_quarantined_after_the_cap(local_cluster, tiny_embed_model,
                                                                              tmp_path):
    poison = "00000000-000000000000"
    ids = write_corpus(tmp_path / "c.jsonl", 400)
    start(local_cluster, 1, tiny_embed_model, env={"QWEN3B_FAULTS": f"before_compute:kill@{poison}"})
    result = submit(local_cluster, tiny_embed_model, tmp_path / "c.jsonl", tmp_path / "out", 200, "--wait")
    assert result.returncode == 1, result.stderr + local_cluster.logs()
    state = read_records((tmp_path / "out"))
    assert list(state.quarantined) == [poison]
    assert "worker lost 3 times" in state.quarantined[poison].reason
    assert poison in result.stderr
    assert_every_id_exactly_once(ids, tmp_path / "out", missing_ok=set(range(0, 200)))
