"""Redis restarts, a producer killed mid-enqueue, a pickle message, poison input (issue 4)."""

import os
import re
import signal
import time

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from kombu import Connection, Exchange, Producer

from common import keys
from common.io.plans import load_plan
from common.io.store import OutputStore
from harness import cluster
from harness.outputs import commit_records, read_records
from tests.faults.conftest import QUICK_HEALING, SIM, faults, start, submit, wait_for
from tests.integration.conftest import Cluster, assert_every_id_exactly_once, wait_until_finished, write_corpus

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("persistent", [False, True], ids=["no-persistence", "appendonly"])
def test_a_redis_restart_mid_job_ends_with_the_job_complete_and_no_operator_command(tmp_path, tiny_embed_model,
                                                                                      persistent):
    # Given a job in progress on two workers
    server = cluster.RedisServer(tmp_path / "redis", appendonly=persistent).start()
    c = Cluster(server, tmp_path / "logs", tmp_path)
    try:
        ids = write_corpus(tmp_path / "c.jsonl", 3000)
        originals = {w.name for w in start(c, 2, tiny_embed_model, env={"QWEN3B_SIM_BATCH_S": "0.1",
                                                                        **QUICK_HEALING})}
        submit(c, tiny_embed_model, tmp_path / "c.jsonl", tmp_path / "out", 100)
        store = OutputStore(tmp_path / "out")
        wait_for(lambda: len(commit_records(store)) >= 4, 120, "the first 4 commits")
        # When Redis restarts mid-job (losing its queues and every record unless it persists them)
        server.restart()
        restarted_at = time.time()
        # Then the job completes with nobody running `resume`: the workers reconnect, and their
        # reconcilers publish again what the restart lost
        wait_until_finished(tmp_path / "out", timeout_s=300)
        commits = read_records(store).commits.values()
        after = {r.worker for r in commits if r.committed_at > restarted_at}
        assert after and after <= originals
        assert_every_id_exactly_once(ids, tmp_path / "out")
    finally:
        c.stop()
        server.stop()


def test_a_redis_restart_that_also_replaces_a_busy_pool_child_still_needs_no_operator_command(tmp_path,
                                                                                               tiny_embed_model,
                                                                                               barrier):
    # Given a worker held in the middle of the first shard of a job
    server = cluster.RedisServer(tmp_path / "redis").start()
    c = Cluster(server, tmp_path / "logs", tmp_path)
    try:
        ids = write_corpus(tmp_path / "c.jsonl", 600)
        [worker] = start(c, 1, tiny_embed_model,
                         env={**QUICK_HEALING, **faults(barrier, "before_commit:wait-once@00000000-000000000000")})
        submit(c, tiny_embed_model, tmp_path / "c.jsonl", tmp_path / "out", 200)
        barrier.wait_reached("before_commit")
        # When Redis restarts without persistence (every queue, record and the job's registration
        # gone) and the busy pool child is replaced (its memory of the job gone too)
        server.restart()
        for pid in worker.pids()[1:]:
            os.kill(pid, signal.SIGKILL)
        # Then the new child finds the job in the output root's registry and finishes it
        wait_until_finished(tmp_path / "out", timeout_s=120)
        assert_every_id_exactly_once(ids, tmp_path / "out")
    finally:
        c.stop()
        server.stop()


def test_a_producer_killed_halfway_through_enqueuing_is_finished_without_resume(local_cluster, tiny_embed_model,
                                                                                tmp_path):
    # Given a producer that dies (SIGKILL) after enqueuing 4 of 10 shards
    ids = write_corpus(tmp_path / "c.jsonl", 1000)
    killed = local_cluster.producer("submit", tmp_path / "c.jsonl", "--model", tiny_embed_model, "--out",
                                    tmp_path / "out", "--backend", "simulated", "--dtype", "fp32", "--shard-rows", 100,
                                    env={"QWEN3B_FAULTS": "enqueue:kill@00000000-000000000400"})
    assert killed.returncode == -9
    assert local_cluster.redis.client().llen(load_plan(OutputStore(tmp_path / "out")).queue) == 4
    # When a worker runs, and nobody resumes the job
    start(local_cluster, 1, tiny_embed_model, env=QUICK_HEALING)
    # Then its reconciler publishes the 6 shards the producer never sent, and the job completes
    wait_until_finished(tmp_path / "out", timeout_s=120)
    assert_every_id_exactly_once(ids, tmp_path / "out")


def test_a_job_that_redis_loses_before_any_shard_starts_completes_though_its_producer_had_no_output_root(
        local_cluster, tiny_embed_model, tmp_path):
    # Given two live workers with an output root, held still (SIGSTOP) so that none takes a message:
    # a worker that takes one records the job under its root itself
    ids = write_corpus(tmp_path / "c.jsonl", 600)
    out = tmp_path / "jobs" / "out"  # not directly in the root: only the workers' heartbeats say where it is
    workers = start(local_cluster, 2, tiny_embed_model, env={"QWEN3B_RECONCILE_INTERVAL_S": "2"})
    for worker in workers:
        worker.signal_all(signal.SIGSTOP)
    time.sleep(2)  # past kombu's BRPOP timeout (1 s): no pending BRPOP left for Redis to answer with a message
    # and a job submitted by a producer with no QWEN3B_OUTPUT_ROOT
    result = submit(local_cluster, tiny_embed_model, tmp_path / "c.jsonl", out, 100, env={"QWEN3B_OUTPUT_ROOT": ""})
    assert "warning" not in result.stderr
    client = local_cluster.redis.client()
    queue = load_plan(OutputStore(out)).queue
    sent = int(re.search(r"enqueued (\d+) shards", result.stderr).group(1))
    assert sum(client.llen(q) for q in keys.queue_lists(queue)) == sent > 0, "a shard started before the loss"
    # When Redis loses everything before any shard starts, and the workers go on
    client.flushall()
    for worker in workers:
        worker.signal_all(signal.SIGCONT)
    # Then the job completes with no operator command: the workers' reconcilers find it in their root
    wait_until_finished(out, timeout_s=90)
    assert_every_id_exactly_once(ids, out)


def test_a_job_submitted_with_no_output_root_known_warns_and_is_found_by_workers_of_its_parent_folder(
        redis_server, tiny_embed_model, tmp_path):
    # Given a producer with no QWEN3B_OUTPUT_ROOT and no live worker to learn a root from
    c = Cluster(redis_server, tmp_path / "logs", tmp_path)
    try:
        ids = write_corpus(tmp_path / "c.jsonl", 300)
        result = submit(c, tiny_embed_model, tmp_path / "c.jsonl", tmp_path / "out", 100,
                        env={"QWEN3B_OUTPUT_ROOT": ""})
        # Then it says, in one line, what is at risk and what to do
        [line] = [x for x in result.stderr.splitlines() if x.startswith("warning:")]
        assert "producer resume" in line and "Set QWEN3B_OUTPUT_ROOT to the workers' output root" in line
        assert str(tmp_path) in line
        # When Redis loses the job before any worker ran, and workers whose root is the output's parent start
        redis_server.client().flushall()
        start(c, 1, tiny_embed_model, env={"QWEN3B_RECONCILE_INTERVAL_S": "2"})
        # Then they find it in that folder's registry and finish it
        wait_until_finished(tmp_path / "out", timeout_s=90)
        assert_every_id_exactly_once(ids, tmp_path / "out")
    finally:
        c.stop()


class _Exploit:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_pickle_message_injected_into_a_queue_is_refused_never_executed(local_cluster, tiny_embed_model, tmp_path):
    # Given a worker and a message whose body would create a file if it were ever unpickled
    ids = write_corpus(tmp_path / "c.jsonl", 200)
    [worker] = start(local_cluster, 1, tiny_embed_model)
    plan_queue = cluster.heartbeat(local_cluster.redis.client(), worker.name)["queue"]
    marker = tmp_path / "pwned"
    with Connection(local_cluster.url) as conn:
        Producer(conn).publish(
            _Exploit(marker), serializer="pickle", exchange=Exchange(plan_queue, type="direct"),
            routing_key=plan_queue, headers={"task": "embed.shard", "id": "evil", "lang": "py"})
    # When the worker has had time to see it, and a real job follows
    result = submit(local_cluster, tiny_embed_model, tmp_path / "c.jsonl", tmp_path / "out", 100, "--wait")
    # Then the pickle was refused, nothing ran, and the worker went on to do the real job
    assert result.returncode == 0, result.stderr + local_cluster.logs()
    assert not marker.exists()
    assert "ContentDisallowed" in worker.log() or "Refusing to deserialize" in worker.log()
    assert_every_id_exactly_once(ids, tmp_path / "out")


def test_every_kind_of_bad_input_ends_as_a_reject_with_a_reason_and_the_job_completes(local_cluster, tiny_embed_model,
                                                                                       tmp_path):
    # Given jsonl and Parquet files holding every bad case of the reliability reference, and huge documents
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    bad_lines = [
        b'{"id": 1, "text": null}', b'{"id": 2}', b'{"id": 3, "text": 3.5}', b'{"id": 4, "text": ""}',
        b'{"id": 5, "text": "\xc3\x28 invalid utf-8"}', b'{"id": 6, "text": "\\udc80 lone surrogate"}',
        b'{"id": 7, "text": "a", "text": "b"}', b'{"id": 8, "text": "unterminated', b'"just a string"',
        b'{"id": 10, "text": NaN}', b'{"id": 11, "text": {"nested": ["deep"]}}', b'[' * 50_000 + b']' * 50_000,
        b'{"text": "no id"}', b'{"id": 1, "text": "duplicate id"}',
        b'{"id": 15, "text": "' + b"one megabyte of text " * 50_000 + b'"}',
        b'{"id": 16, "text": "a fine sentence"}',
    ]
    (corpus / "a.jsonl").write_bytes(b"\xef\xbb\xbf" + b"\r\n".join(bad_lines) + b"\r\n\r\n")
    with open(corpus / "b.jsonl", "wb") as f:  # a 200 MB document
        f.write(b'{"id": 17, "text": "')
        chunk = b"two hundred megabytes " * 50_000
        for _ in range(200_000_000 // len(chunk)):
            f.write(chunk)
        f.write(b'"}\n')
    pq.write_table(pa.table({"id": [20, 21, 22, 16], "text": ["ok", None, "   ", "duplicate of a jsonl id"]}),
                   corpus / "c.parquet")
    start(local_cluster, 1, tiny_embed_model)
    # When the folder is submitted as one job
    result = submit(local_cluster, tiny_embed_model, corpus, tmp_path / "out", 100, "--wait")
    # Then the job completes, every row is in the output or the rejects, each reject with its reason
    assert result.returncode == 0, result.stderr + local_cluster.logs()
    rejects = ds.dataset(tmp_path / "out" / "rejects").to_table().to_pylist()
    reasons = sorted((r["file"].rsplit("/", 1)[1], r["row"], r["reason"].split(":")[0]) for r in rejects)
    assert reasons == sorted([
        ("a.jsonl", 1, "null_text"), ("a.jsonl", 2, "missing_text"), ("a.jsonl", 3, "non_string_text"),
        ("a.jsonl", 4, "empty_text"), ("a.jsonl", 5, "invalid_utf8"), ("a.jsonl", 6, "invalid_unicode"),
        ("a.jsonl", 7, "duplicate_key"), ("a.jsonl", 8, "malformed_json"), ("a.jsonl", 9, "not_an_object"),
        ("a.jsonl", 10, "non_string_text"), ("a.jsonl", 11, "non_string_text"), ("a.jsonl", 12, "malformed_json"),
        ("a.jsonl", 13, "missing_id"), ("a.jsonl", 14, "duplicate_id"),
        ("c.parquet", 1, "null_text"), ("c.parquet", 2, "empty_text"), ("c.parquet", 3, "duplicate_id"),
    ])
    data = {r["id"]: r for r in ds.dataset(tmp_path / "out" / "data").to_table().to_pylist()}
    assert sorted(data) == [15, 16, 17, 20]
    assert data[15]["truncated"] and data[17]["truncated"] and not data[16]["truncated"]
    assert data[17]["n_tokens"] == 512
    state = read_records((tmp_path / "out"))
    assert state.success.rows_in == len(bad_lines) + 1 + 4 == state.rows_out + state.rows_rejected


def test_a_whole_unreadable_file_is_a_clear_error_before_anything_is_enqueued(local_cluster, tiny_embed_model,
                                                                              tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "good.jsonl").write_text('{"id": 1, "text": "x"}\n')
    (tmp_path / "in" / "broken.parquet").write_bytes(b"PAR1 this is not parquet")
    result = submit_expect_error(local_cluster, tiny_embed_model, tmp_path / "in", tmp_path / "out")
    assert "broken.parquet" in result.stderr and "not a readable Parquet file" in result.stderr
    assert not (tmp_path / "out" / "_plan.json").exists()
    assert not local_cluster.redis.client().keys("embed.*")


def submit_expect_error(c, model, corpus, out):
    result = c.producer("submit", corpus, "--model", model, "--out", out, "--backend", "simulated", env=SIM)
    assert result.returncode == 2, result.stderr
    return result

