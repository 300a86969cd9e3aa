"""Bulk jobs through Celery and a real Redis, with real worker processes (issue 3)."""

import json
import shutil

import numpy as np
import pyarrow.dataset as ds
import pytest

from common import dispatch, keys
from common.io.plans import load_plan
from common.io.store import OutputStore
from common.reconcile import Reconciler
from common.schemas import JobSpec, ModelRef
from harness.outputs import read_records
from producer.plan import plan_job
from tests.integration.conftest import assert_every_id_exactly_once, wait_until_finished, write_corpus

pytestmark = pytest.mark.slow
MODEL = ModelRef(source="/models/m", identity="0" * 64, tag="m-00000000")


def test_a_10000_row_job_over_two_workers_returns_every_id_exactly_once(local_cluster, tiny_embed_model, tmp_path):
    # Given a 10,000-row corpus and two workers serving the model's queue
    ids = write_corpus(tmp_path / "corpus.jsonl", 10_000)
    local_cluster.start_workers(2, tiny_embed_model)
    # When the job is submitted and followed to the end
    out = tmp_path / "out"
    result = local_cluster.producer("submit", tmp_path / "corpus.jsonl", "--model", tiny_embed_model, "--out", out,
                                    "--dtype", "fp32", "--shard-rows", 500, "--wait")
    # Then it completes, every id comes back exactly once, and both workers took part
    assert result.returncode == 0, result.stderr + local_cluster.logs()
    assert_every_id_exactly_once(ids, out)
    state = read_records((out))
    assert state.success is not None and state.success.status == "completed"
    assert state.success.rows_out == 10_000
    assert {c.worker for c in state.commits.values()} == {"embed-w0", "embed-w1"}
    table = ds.dataset(out / "data").to_table()
    assert table.schema.field("embedding").type.list_size == 64
    norms = np.linalg.norm(np.array(table.column("embedding").to_pylist()), axis=1)
    assert np.allclose(norms, 1.0, atol=1e-5)


def test_the_same_job_submitted_twice_does_the_work_once(local_cluster, tiny_embed_model, tmp_path):
    # Given a job submitted twice before any worker runs
    ids = write_corpus(tmp_path / "corpus.jsonl", 1200)
    out = tmp_path / "out"
    args = ("submit", tmp_path / "corpus.jsonl", "--model", tiny_embed_model, "--out", out, "--dtype", "fp32",
            "--shard-rows", 200)
    first, second = local_cluster.producer(*args), local_cluster.producer(*args)
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    assert first.stdout.strip() == second.stdout.strip()  # the same job id
    # Then the second submit resumes the same job and publishes nothing: every shard is already queued
    assert "resuming job" in second.stderr and "enqueued 0 shards" in second.stderr
    assert local_cluster.redis.client().llen(load_plan(OutputStore(out)).queue) == 6
    # When a worker drains the queue
    local_cluster.start_workers(1, tiny_embed_model)
    wait_until_finished(out)
    commits = read_records((out)).commits
    before = {sid: c.attempt for sid, c in commits.items()}
    # Then each shard was committed once, the duplicates were skipped, and a third submit changes nothing
    assert len(commits) == 6
    third = local_cluster.producer(*args, "--wait")
    assert third.returncode == 0, third.stderr
    assert "enqueued 0 shards" in third.stderr
    assert {sid: c.attempt for sid, c in read_records((out)).commits.items()} == before
    assert_every_id_exactly_once(ids, out)


def test_a_job_whose_redis_queues_were_flushed_completes_after_resume(local_cluster, tiny_embed_model, tmp_path):
    # Given a submitted job whose queued messages are lost (Redis flushed before any worker ran)
    ids = write_corpus(tmp_path / "corpus.jsonl", 1000)
    out = tmp_path / "out"
    submitted = local_cluster.producer("submit", tmp_path / "corpus.jsonl", "--model", tiny_embed_model, "--out", out,
                                       "--dtype", "fp32", "--shard-rows", 250)
    assert submitted.returncode == 0, submitted.stderr
    local_cluster.redis.client().flushall()
    local_cluster.start_workers(1, tiny_embed_model)
    assert read_records((out)).pending  # nothing arrives: the messages are gone
    # When the job is resumed by its output folder (Redis forgot the job id too)
    resumed = local_cluster.producer("resume", out, "--wait")
    # Then it completes with every id exactly once
    assert resumed.returncode == 0, resumed.stderr + local_cluster.logs()
    assert "enqueued 4 shards" in resumed.stderr
    assert_every_id_exactly_once(ids, out)


def test_a_shard_that_always_fails_is_quarantined_and_the_rest_completes(local_cluster, tiny_embed_model, tmp_path):
    # Given a worker on which one shard fails every time
    ids = write_corpus(tmp_path / "corpus.jsonl", 1000)
    poison = "00000000-000000000500"
    local_cluster.start_workers(1, tiny_embed_model, env={"QWEN3B_FAULTS": f"before_compute:raise@{poison}"})
    out = tmp_path / "out"
    # When the job runs to its end
    result = local_cluster.producer("submit", tmp_path / "corpus.jsonl", "--model", tiny_embed_model, "--out", out,
                                    "--dtype", "fp32", "--shard-rows", 250, "--wait")
    # Then it ends as completed-with-failures (exit 1), naming the shard and why
    assert result.returncode == 1, result.stderr + local_cluster.logs()
    state = read_records((out))
    assert state.success.status == "completed_with_failures"
    assert list(state.quarantined) == [poison]
    record = state.quarantined[poison]
    assert record.attempts == 3 and "injected fault" in record.reason
    assert poison in result.stderr
    # and every row outside the poison shard is there exactly once
    assert_every_id_exactly_once(ids, out, missing_ok=set(range(500, 750)))


def test_the_local_path_gives_the_same_vectors_as_the_queued_path(local_cluster, tiny_embed_model, tmp_path):
    # Given one corpus run once in-process and once through a worker
    write_corpus(tmp_path / "corpus.jsonl", 600)
    common = ["--model", tiny_embed_model, "--dtype", "fp32", "--shard-rows", 200, "--query"]
    local = local_cluster.producer("submit", tmp_path / "corpus.jsonl", "--out", tmp_path / "a", "--local", *common)
    assert local.returncode == 0, local.stderr
    local_cluster.start_workers(1, tiny_embed_model)
    queued = local_cluster.producer("submit", tmp_path / "corpus.jsonl", "--out", tmp_path / "b", "--wait", *common)
    assert queued.returncode == 0, queued.stderr + local_cluster.logs()
    # Then the vectors agree row by row
    a = ds.dataset(tmp_path / "a" / "data").to_table().sort_by("id")
    b = ds.dataset(tmp_path / "b" / "data").to_table().sort_by("id")
    assert a.column("id").to_pylist() == b.column("id").to_pylist()
    va, vb = (np.array(t.column("embedding").to_pylist()) for t in (a, b))
    assert np.min(np.sum(va * vb, axis=1)) >= 0.999999
    assert a.column("n_tokens").to_pylist() == b.column("n_tokens").to_pylist()


def test_a_rerank_job_scores_every_pair(local_cluster, tiny_rerank_model, tmp_path):
    ids = write_corpus(tmp_path / "pairs.jsonl", 400, task="rerank")
    local_cluster.start_workers(1, tiny_rerank_model, task="rerank")
    out = tmp_path / "out"
    result = local_cluster.producer("submit", tmp_path / "pairs.jsonl", "--task", "rerank", "--model",
                                    tiny_rerank_model, "--out", out, "--dtype", "fp32", "--shard-rows", 100, "--wait")
    assert result.returncode == 0, result.stderr + local_cluster.logs()
    assert_every_id_exactly_once(ids, out)
    scores = np.array(ds.dataset(out / "data").to_table().column("score").to_pylist())
    assert ((scores > 0) & (scores < 1)).all() and scores.std() > 1e-3


def test_submit_without_a_broker_says_so_and_mentions_local(local_cluster, tiny_embed_model, tmp_path):
    write_corpus(tmp_path / "corpus.jsonl", 10)
    local_cluster.redis.stop()
    result = local_cluster.producer("submit", tmp_path / "corpus.jsonl", "--model", tiny_embed_model, "--out",
                                    tmp_path / "out", timeout_s=60)
    assert result.returncode == 2
    assert "no broker answers" in result.stderr and "--local" in result.stderr
    assert not (tmp_path / "out" / "_plan.json").exists()


def test_wait_says_plainly_when_no_worker_serves_the_queue(local_cluster, tiny_embed_model, tmp_path):
    write_corpus(tmp_path / "corpus.jsonl", 10)
    import subprocess

    with pytest.raises(subprocess.TimeoutExpired) as timed_out:
        local_cluster.producer("submit", tmp_path / "corpus.jsonl", "--model", tiny_embed_model, "--out",
                               tmp_path / "out", "--wait", timeout_s=20)
    stderr = (timed_out.value.stderr or b"").decode() if isinstance(timed_out.value.stderr, bytes) else timed_out.value.stderr
    assert "no live worker serves queue embed." in (stderr or "")


def test_a_different_job_into_an_existing_output_is_refused(local_cluster, tiny_embed_model, tmp_path):
    write_corpus(tmp_path / "corpus.jsonl", 10)
    out = tmp_path / "out"
    first = local_cluster.producer("submit", tmp_path / "corpus.jsonl", "--model", tiny_embed_model, "--out", out,
                                   "--local", "--dtype", "fp32")
    assert first.returncode == 0, first.stderr
    second = local_cluster.producer("submit", tmp_path / "corpus.jsonl", "--model", tiny_embed_model, "--out", out,
                                    "--local", "--dtype", "bf16")
    assert second.returncode == 2
    assert "already holds job" in second.stderr
    assert json.loads((out / "_plan.json").read_text())["spec"]["dtype"] == "fp32"



class Recording:
    """A publisher that only records what it was asked to publish."""

    def __init__(self, published: list):
        self.published = published

    def publish(self, plan, output, shards, cursor=None):
        self.published.append([s.shard_id for s in shards])
        return len(shards)


def test_a_finished_jobs_output_that_the_user_deletes_is_not_computed_again(redis_server, tmp_path):
    # Given a job a worker's reconciler has watched (and parsed) while it ran
    write_corpus(tmp_path / "corpus.jsonl", 40)
    out, client, published = tmp_path / "out", redis_server.client(), []
    plan, _ = plan_job(str(tmp_path / "corpus.jsonl"), JobSpec(model=MODEL, shard_rows=10), OutputStore(out))
    dispatch.register_job(client, plan, str(out))
    reconciler = Reconciler(client, Recording(published), str(tmp_path))
    reconciler.remember(plan.job_id, str(out))
    reconciler.run_once()
    # When the job is finished and forgotten in Redis, and then the user deletes its output
    dispatch.forget_job(client, plan.job_id)
    shutil.rmtree(out)
    published.clear()
    reconciler.run_once()
    # Then no shard is published again, the job is not watched again, and its output stays deleted
    assert published == []
    assert not client.sismember(keys.active_jobs(), plan.job_id)
    assert reconciler.run_once() == [] and not out.exists()


def test_a_running_jobs_output_deleted_under_it_stops_being_watched_and_nothing_is_published(redis_server,
                                                                                            tmp_path):
    # Given a job still active in Redis that a worker's reconciler has parsed
    write_corpus(tmp_path / "corpus.jsonl", 40)
    out, client, published = tmp_path / "out", redis_server.client(), []
    plan, _ = plan_job(str(tmp_path / "corpus.jsonl"), JobSpec(model=MODEL, shard_rows=10), OutputStore(out))
    dispatch.register_job(client, plan, str(out))
    reconciler = Reconciler(client, Recording(published), str(tmp_path))
    reconciler.run_once()
    published.clear()
    # When its output is deleted
    shutil.rmtree(out)
    reconciler.run_once()
    # Then nothing is published into the deleted folder, and Redis no longer lists the job as active
    assert published == [] and not out.exists()
    assert not client.sismember(keys.active_jobs(), plan.job_id)
