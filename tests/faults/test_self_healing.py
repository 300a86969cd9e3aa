"""A job finishes by itself after any single fault, with no operator command (issue 11): a dead or
paused worker, a hung shard killed by the hard time limit, a late commit after a quarantine, an
input rewritten under a running job. Real workers, a private redis-server, barriers, no sleeps."""

import json
import signal
import time

import pyarrow.dataset as ds
import pytest

from common import keys
from common.io.plans import load_plan
from common.io.store import OutputStore
from harness.outputs import read_records
from tests.faults.conftest import QUICK_HEALING, committed_by, faults, start, submit, wait_for
from tests.integration.conftest import assert_every_id_exactly_once, wait_until_finished, write_corpus

pytestmark = pytest.mark.slow

FIRST, SECOND = "00000000-000000000000", "00000000-000000000200"


def test_a_dead_workers_shard_restarts_elsewhere_within_60_s_with_the_default_settings(local_cluster, tiny_embed_model,
                                                                                      tmp_path, barrier):
    # Given the default settings (a one-hour visibility timeout) and a worker held mid-shard
    ids = write_corpus(tmp_path / "c.jsonl", 400)
    [doomed] = start(local_cluster, 1, tiny_embed_model, env=faults(barrier, "before_commit:wait"))
    submit(local_cluster, tiny_embed_model, tmp_path / "c.jsonl", tmp_path / "out", 200)
    [shard] = barrier.wait_reached("before_commit")
    [survivor] = start(local_cluster, 1, tiny_embed_model)
    # When its whole host goes (every process SIGKILLed: nobody is left to requeue anything)
    doomed.signal_all(signal.SIGKILL)
    killed_at = time.monotonic()
    # Then the survivor runs that shard well before the visibility timeout: within 60 s
    wait_for(lambda: committed_by(tmp_path / "out", shard), 90, "the dead worker's shard being committed")
    assert time.monotonic() - killed_at < 60
    assert committed_by(tmp_path / "out", shard) == survivor.name
    wait_until_finished(tmp_path / "out")
    assert_every_id_exactly_once(ids, tmp_path / "out")


def test_a_paused_workers_shard_runs_elsewhere_and_its_late_commit_changes_nothing(local_cluster, tiny_embed_model,
                                                                                  tmp_path, barrier):
    # Given a worker held just before committing a shard
    ids = write_corpus(tmp_path / "c.jsonl", 400)
    out = tmp_path / "out"
    [paused] = start(local_cluster, 1, tiny_embed_model, env={**QUICK_HEALING, **faults(barrier, "before_commit:wait")})
    submit(local_cluster, tiny_embed_model, tmp_path / "c.jsonl", out, 200)
    [shard] = barrier.wait_reached("before_commit")
    # When it is paused (SIGSTOP: alive but silent) and another worker is running
    paused.signal_all(signal.SIGSTOP)
    [other] = start(local_cluster, 1, tiny_embed_model, env=QUICK_HEALING)
    # Then its shard is committed by the other worker once its heartbeat has expired
    wait_for(lambda: committed_by(out, shard), 60, "the paused worker's shard being committed elsewhere")
    state = wait_until_finished(out)
    committed = (out / state.commits[shard].data_file).read_bytes()
    # and when it wakes up and commits, it loses the race and changes nothing: no error, no retry,
    # nothing left behind in Redis
    paused.signal_all(signal.SIGCONT)
    barrier.release("before_commit")
    wait_for(lambda: "'lost_race'" in paused.log(), 60, "the paused worker's late commit")
    assert read_records((out)).commits[shard].worker == other.name
    assert (out / state.commits[shard].data_file).read_bytes() == committed
    assert_every_id_exactly_once(ids, out)
    assert "Retry in" not in paused.log() and "failed (" not in paused.log()
    assert not local_cluster.redis.client().exists(keys.job_errors(load_plan(OutputStore(out)).job_id))


def test_a_shard_killed_by_the_hard_time_limit_is_run_again_not_dropped(local_cluster, tiny_embed_model, tmp_path):
    # Given a shard that hangs once in C after writing its file (a hung CUDA sync or NFS read: no
    # Python signal handler runs, so only the hard time limit ends it)
    env = {"QWEN3B_TASK_TIME_LIMIT_S": "4", "QWEN3B_TASK_SOFT_TIME_LIMIT_S": "3", "QWEN3B_VISIBILITY_TIMEOUT_S": "8",
           "QWEN3B_FAULTS": f"after_write:stall=60-once@{FIRST}", "QWEN3B_FAULT_STATE": str(tmp_path / "faults")}
    ids = write_corpus(tmp_path / "c.jsonl", 400)
    [worker] = start(local_cluster, 1, tiny_embed_model, env=env)
    # When the job runs
    result = submit(local_cluster, tiny_embed_model, tmp_path / "c.jsonl", tmp_path / "out", 200, "--wait", env=env)
    # Then the killed shard came back (not acked and dropped), was committed once, and left no staged files
    assert result.returncode == 0, result.stderr + local_cluster.logs()
    assert "Hard time limit (4s) exceeded" in worker.log()
    assert_every_id_exactly_once(ids, tmp_path / "out")
    assert not [p for p in (tmp_path / "out" / "_tmp").rglob("*") if p.is_file()]


def test_a_shard_that_always_hits_the_hard_limit_is_quarantined_and_resume_does_not_reset_its_count(
        local_cluster, tiny_embed_model, tmp_path):
    # Given a shard that hangs every time, and a cap of two deliveries
    env = {"QWEN3B_TASK_TIME_LIMIT_S": "3", "QWEN3B_TASK_SOFT_TIME_LIMIT_S": "2", "QWEN3B_VISIBILITY_TIMEOUT_S": "6",
           "QWEN3B_MAX_ATTEMPTS": "2", "QWEN3B_FAULTS": f"before_compute:stall=60@{FIRST}"}
    ids = write_corpus(tmp_path / "c.jsonl", 400)
    start(local_cluster, 1, tiny_embed_model, env=env)
    submit(local_cluster, tiny_embed_model, tmp_path / "c.jsonl", tmp_path / "out", 200, env=env)
    plan = load_plan(OutputStore(tmp_path / "out"))
    attempts = lambda: int(local_cluster.redis.client().hget(keys.job_attempts(plan.job_id), FIRST) or 0)  # noqa: E731
    wait_for(lambda: attempts() >= 1, 60, "the first delivery")
    # When an operator resumes the job while the shard hangs
    resumed = local_cluster.producer("resume", tmp_path / "out", env=env)
    assert resumed.returncode == 0, resumed.stderr
    # Then the count goes on (resume resets nothing), and the shard is quarantined after two deliveries
    state = wait_until_finished(tmp_path / "out", timeout_s=120)
    record = state.quarantined[FIRST]
    assert record.attempts == 2, record
    assert "hard time limit" in record.reason, record.reason
    assert_every_id_exactly_once(ids, tmp_path / "out", missing_ok=set(range(200)))


def test_a_late_commit_after_a_quarantine_rewrites_the_success_marker(local_cluster, tiny_embed_model, tmp_path,
                                                                      barrier):
    # Given a worker held just before committing a shard, then paused, and another worker whose every try
    # of that shard fails, so that the cluster gives it up
    env = {**QUICK_HEALING, "QWEN3B_MAX_ATTEMPTS": "1"}
    ids = write_corpus(tmp_path / "c.jsonl", 600)
    out = tmp_path / "out"
    [slow] = start(local_cluster, 1, tiny_embed_model, env={**env, **faults(barrier, f"before_commit:wait@{FIRST}")})
    submit(local_cluster, tiny_embed_model, tmp_path / "c.jsonl", out, 200, env=env)
    barrier.wait_reached("before_commit")
    slow.signal_all(signal.SIGSTOP)
    start(local_cluster, 1, tiny_embed_model, env={**env, **faults(barrier, f"before_compute:raise@{FIRST}")})
    wait_for(lambda: OutputStore(out).load_success(), 60, "the job being marked done without the held shard")
    assert OutputStore(out).load_success().status == "completed_with_failures"
    # When the held worker wakes up and commits the quarantined shard after all
    slow.signal_all(signal.SIGCONT)
    barrier.release("before_commit")
    # Then the marker is written anew and describes what is in the folder
    marker = wait_for(lambda: (m := OutputStore(out).load_success()) and m.status == "completed" and m, 60,
                      "the marker being rewritten")
    rows_in_data = ds.dataset(out / "data").count_rows()
    assert marker.rows_out == rows_in_data == 600 and marker.shards_quarantined == ()
    assert_every_id_exactly_once(ids, out)


def test_resume_retry_quarantined_completes_the_output_and_exits_0(local_cluster, tiny_embed_model, tmp_path):
    # Given a job whose one shard failed its only attempt
    env = {"QWEN3B_MAX_ATTEMPTS": "1", "QWEN3B_FAULTS": f"before_compute:raise-once@{SECOND}",
           "QWEN3B_FAULT_STATE": str(tmp_path / "faults")}
    ids = write_corpus(tmp_path / "c.jsonl", 400)
    start(local_cluster, 1, tiny_embed_model, env=env)
    first = submit(local_cluster, tiny_embed_model, tmp_path / "c.jsonl", tmp_path / "out", 200, "--wait", env=env)
    assert first.returncode == 1, first.stderr
    assert OutputStore(tmp_path / "out").load_success().rows_out == 200
    # When its quarantined shard is retried
    retried = local_cluster.producer("resume", tmp_path / "out", "--retry-quarantined", "--wait", env=env)
    # Then the job is whole: exit 0, and the marker says so with every row
    assert retried.returncode == 0, retried.stderr + local_cluster.logs()
    marker = OutputStore(tmp_path / "out").load_success()
    assert (marker.status, marker.rows_out, marker.shards_quarantined) == ("completed", 400, ())
    assert_every_id_exactly_once(ids, tmp_path / "out")


def test_an_input_rewritten_after_planning_is_refused_and_nothing_of_it_is_committed(local_cluster, tiny_embed_model,
                                                                                 tmp_path):
    # Given a job planned over a file that is then rewritten with as many lines, other text and ids
    corpus = tmp_path / "c.jsonl"
    write_corpus(corpus, 400)
    submit(local_cluster, tiny_embed_model, corpus, tmp_path / "out", 200)
    corpus.write_text("".join(json.dumps({"id": 10_000 + i, "text": f"replaced {i}"}) + "\n" for i in range(400)))
    # When a worker runs its shards
    start(local_cluster, 1, tiny_embed_model)
    state = wait_until_finished(tmp_path / "out")
    # Then no row of the new file was embedded, each shard says why, and status and resume tell the user
    assert not state.commits and sorted(state.quarantined) == [FIRST, SECOND]
    assert all(q.reason.startswith("input_changed:") and q.attempts == 1 for q in state.quarantined.values())
    status = local_cluster.producer("status", tmp_path / "out")
    assert status.returncode == 1 and "input changed since planning" in status.stderr, status.stderr
    resumed = local_cluster.producer("resume", tmp_path / "out")
    assert "input changed since planning" in resumed.stderr
