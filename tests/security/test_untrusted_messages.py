"""A message cannot change what a job computes or how its shards are retried. Each test plays
someone who can write to Redis, with a stock Celery client or redis-cli's commands: a shard of a
model-B job sent to model A's queue and to a reranker's personal queue, copies of a genuine message
that carry a 0.1 s soft time limit, a far ETA or a past expiry, and a poisoned delivery counter.
Real worker processes, a private redis-server."""

import datetime

import pytest
from celery import Celery
from kombu import Exchange, Queue

from common import keys
from common.dispatch import shard_message
from common.io.plans import load_plan
from common.io.store import OutputStore
from common.model_identity import model_ref
from common.schemas import JobSpec
from harness.outputs import commit_records
from producer.plan import plan_job
from tests.faults.conftest import SIM, submit, wait_for
from tests.integration.conftest import assert_every_id_exactly_once, wait_until_finished, write_corpus

pytestmark = pytest.mark.slow


def plan_only(model, corpus, out, task="embed", shard_rows=100):
    """A job planned in its output, nothing enqueued: the test sends the messages itself."""
    spec = JobSpec(model=model_ref(str(model)), task=task, backend="simulated", dtype="fp32", shard_rows=shard_rows)
    plan, _ = plan_job(str(corpus), spec, OutputStore(out))
    return plan


def send(url: str, queue: str, task: str, kwargs: dict, **options) -> None:
    """A stock Celery client, nothing of ours, with whatever execution options the sender likes."""
    app = Celery(broker=url)
    target = Queue(queue, Exchange(queue, type="direct"), routing_key=queue)
    app.send_task(task, kwargs=kwargs, queue=target, declare=[target], **options)
    app.close()


def test_a_model_b_shard_on_model_a_queues_is_refused_and_nothing_is_committed(local_cluster, tiny_embed_model,
                                                                               tiny_rerank_model, tmp_path):
    # Given an embedding worker of model A and a reranker worker, and a job planned for model B
    # (no worker of B runs)
    [embedder] = local_cluster.start_workers(1, tiny_embed_model, backend="simulated", env=SIM)
    [reranker] = local_cluster.start_workers(1, tiny_rerank_model, task="rerank", backend="simulated", env=SIM)
    write_corpus(tmp_path / "c.jsonl", 200)
    plan = plan_only(tiny_rerank_model, tmp_path / "c.jsonl", tmp_path / "out")
    queue_a = keys.shard_queue("embed", model_ref(str(tiny_embed_model)).identity, "fp32", "simulated")
    assert plan.queue != queue_a
    # When its shards are sent to model A's shared queue and to the reranker's personal queue
    for ordinal, queue in ((0, queue_a), (1, keys.worker_queue(reranker.name))):
        message = shard_message(plan, str(OutputStore(tmp_path / "out").root), plan.shard_at(ordinal)).model_dump()
        send(local_cluster.url, queue, "embed.shard", message)
    # Then both workers refuse them, saying what differs, and nothing is committed
    for worker, differs in ((embedder, "model identity"), (reranker, "task 'embed' (this worker: 'rerank')")):
        wait_for(lambda: "refused a shard message" in worker.log(), 60, f"{worker.name} refusing")
        assert "is not what this worker computes" in worker.log() and differs in worker.log(), worker.log()[-3000:]
    refusals = local_cluster.redis.client().hgetall(keys.job_refused(plan.job_id))
    assert len(refusals) == 2, refusals
    assert commit_records(tmp_path / "out") == {}
    assert not (tmp_path / "out" / "data").exists()


def test_execution_options_in_messages_are_ignored_and_the_shard_commits_once(local_cluster, tiny_embed_model,
                                                                              tmp_path):
    # Given a worker whose shards take longer than 0.1 s, and a one-shard job planned, not enqueued
    [worker] = local_cluster.start_workers(1, tiny_embed_model, backend="simulated",
                                           env={"QWEN3B_SIM_BATCH_S": "0.3"})
    ids = write_corpus(tmp_path / "c.jsonl", 100)
    out = tmp_path / "out"
    plan = plan_only(tiny_embed_model, tmp_path / "c.jsonl", out)
    message = shard_message(plan, str(OutputStore(out).root), plan.shard_at(0)).model_dump()
    # When copies of its genuine message arrive first with a 0.1 s soft time limit (three of them:
    # the attempt cap), then one parked for a day, and one that expired an hour ago
    for _ in range(3):
        send(local_cluster.url, plan.queue, "embed.shard", message, soft_time_limit=0.1, time_limit=0.2)
    send(local_cluster.url, plan.queue, "embed.shard", message, countdown=86400)
    send(local_cluster.url, plan.queue, "embed.shard", message,
         expires=datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(hours=1))
    # Then the worker's own limits apply: the job completes, nothing is quarantined
    state = wait_until_finished(out, timeout_s=120)
    assert state.success.status == "completed" and not state.quarantined
    assert_every_id_exactly_once(ids, out)
    assert "ignored, the worker's settings decide" in worker.log()
    assert "SoftTimeLimitExceeded" not in worker.log()
    # and every copy was taken and handled: none waits parked in the worker or in the queue
    wait_for(lambda: worker.log().count("succeeded in") >= 5, 60, "the five copies handled")


def test_a_poisoned_delivery_counter_quarantines_nothing(local_cluster, tiny_embed_model, tmp_path):
    # Given a submitted job, not yet taken by any worker
    ids = write_corpus(tmp_path / "c.jsonl", 300)
    out = tmp_path / "out"
    submit(local_cluster, tiny_embed_model, tmp_path / "c.jsonl", out, 100)
    plan = load_plan(OutputStore(out))
    # When someone sets every shard's delivery counter far past the attempt cap
    client = local_cluster.redis.client()
    for shard in plan.iter_shards():
        client.hset(keys.job_attempts(plan.job_id), shard.shard_id, 99)
    local_cluster.start_workers(1, tiny_embed_model, backend="simulated", env=SIM)
    # Then every shard still runs and commits: only what workers saw fail counts
    state = wait_until_finished(out, timeout_s=120)
    assert state.success.status == "completed" and not state.quarantined
    assert_every_id_exactly_once(ids, out)
