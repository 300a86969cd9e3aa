"""The window: a job puts a few messages per worker in Redis, never all its shards; what Redis
forgets is rebuilt from the store; a cancelled job leaves the reconcilers (common/window.py,
common/reconcile.py), against a real redis-server and real Celery messages."""

import json
import time

import pytest
from celery import Celery

from common import defaults, dispatch, keys, window
from common.io.manifest import load_manifest, save_manifest
from common.io.store import OutputStore
from common.reconcile import Reconciler, reconcile_job
from common.schemas import CommitRecord, JobSpec, ModelRef
from producer import submit as broker
from producer.plan import plan_job

MODEL = ModelRef(source="/models/m", identity="0" * 64, tag="m-00000000")


def plan_rows(tmp_path, rows: int, shard_rows: int = 1, **spec):
    (tmp_path / "c.jsonl").write_text("".join(json.dumps({"id": i, "text": f"t {i}"}) + "\n" for i in range(rows)))
    store = OutputStore(tmp_path / "out")
    plan, _ = plan_job(str(tmp_path / "c.jsonl"), JobSpec(model=MODEL, shard_rows=shard_rows, **spec), store)
    return store, plan


def publisher_for(redis_server) -> dispatch.Publisher:
    return dispatch.Publisher(Celery(broker=redis_server.url), redis_server.client())


def waiting(client, plan) -> int:
    return sum(client.llen(name) for name in keys.queue_lists(plan.queue))


def commit_directly(store, plan, ordinals) -> None:
    """Commit records for these shards, as a worker writes them, folded into the manifest."""
    manifest = load_manifest(store, plan.shards_total)
    for ordinal in ordinals:
        shard = plan.shard_at(ordinal)
        record = CommitRecord(shard_id=shard.shard_id, attempt="a", rows_in=shard.rows, rows_out=shard.rows,
                              rows_rejected=0, tokens=1, data_file=store.data_key(shard.shard_id), reject_file=None,
                              data_sha256="", worker="w", seconds=0.0, committed_at=time.time())
        store.create_if_absent(store.commit_key(shard.shard_id), record.model_dump_json().encode())
        manifest.add_commit(ordinal, record, shard.rows)
    assert save_manifest(store, manifest)


def test_a_submit_publishes_one_window_of_a_large_job_not_every_shard(redis_server, tmp_path):
    # Given a job of 1,000 shards and no worker yet
    store, plan = plan_rows(tmp_path, 1000)
    client = redis_server.client()
    # When it is enqueued
    sent = reconcile_job(client, publisher_for(redis_server), store, plan, grace_s=0).topped_up
    # Then one window waits in the queue, and the job's records in Redis are the window's
    assert sent == waiting(client, plan) == defaults.WINDOW_MIN
    assert client.hlen(keys.job_queued(plan.job_id)) == defaults.WINDOW_MIN
    assert int(client.get(keys.job_cursor(plan.job_id))) == defaults.WINDOW_MIN
    # and a second pass publishes nothing more while the window is full
    assert reconcile_job(client, publisher_for(redis_server), store, plan, grace_s=0).topped_up == 0


def test_a_window_below_half_is_topped_up_from_the_cursor_and_never_past_done_shards(redis_server, tmp_path):
    # Given a job whose window was published, and shards 40..59 committed already (an earlier run)
    store, plan = plan_rows(tmp_path, 100)
    client, publisher = redis_server.client(), publisher_for(redis_server)
    commit_directly(store, plan, range(40, 60))
    reconcile_job(client, publisher, store, plan, grace_s=0)
    # When workers take most of the window (their messages leave the queued records)
    for ordinal in range(25):
        dispatch.take(client, plan.job_id, plan.shard_at(ordinal), "w1")
    # Then a worker's top-up publishes up to the window again, skipping the done shards
    sent = window.top_up(client, publisher, plan, store.url, target=32, only_below_half=True)
    queued = sorted(int(v.split()[1]) for v in client.hvals(keys.job_queued(plan.job_id)))
    assert sent == 25 and queued == list(range(25, 40)) + list(range(60, 77))


def test_after_redis_loses_everything_the_window_is_rebuilt_from_the_store_and_skips_done_shards(redis_server,
                                                                                                 tmp_path):
    # Given a job half done in the store, then a Redis that lost every key (a restart without persistence)
    store, plan = plan_rows(tmp_path, 64)
    client, publisher = redis_server.client(), publisher_for(redis_server)
    reconcile_job(client, publisher, store, plan, grace_s=0)
    commit_directly(store, plan, range(0, 64, 2))
    client.flushall()
    # When a worker's reconciler passes over it (found in the output root's registry)
    reconciler = Reconciler(client, publisher, str(tmp_path))
    reconciler.remember(plan.job_id, store.url)
    reconciler.run_once()
    # Then the pending half is published, and nothing the store says is done
    queued = sorted(int(v.split()[1]) for v in client.hvals(keys.job_queued(plan.job_id)))
    assert queued == list(range(1, 64, 2)) and waiting(client, plan) == 32


def test_a_shard_below_the_cursor_that_no_record_accounts_for_is_published_again(redis_server, tmp_path):
    # Given a window whose record of one shard was lost (Redis lost that key alone, or a crash between
    # a claim and its publish)
    store, plan = plan_rows(tmp_path, 10)
    client, publisher = redis_server.client(), publisher_for(redis_server)
    reconcile_job(client, publisher, store, plan, grace_s=0)
    lost = plan.shard_at(3)
    client.hdel(keys.job_queued(plan.job_id), lost.shard_id)
    # When the reconciler passes
    outcome = reconcile_job(client, publisher, store, plan, grace_s=10)
    # Then that shard, and only it, is published again
    assert outcome.republished == [3]


def test_a_cancelled_job_leaves_every_reconciler_after_one_pass(redis_server, tmp_path):
    # Given a job a worker's reconciler watches (in Redis's active set and the output root's registry)
    store, plan = plan_rows(tmp_path, 10)
    client, publisher = redis_server.client(), publisher_for(redis_server)
    dispatch.register_job(client, plan, store.url)
    reconciler = Reconciler(client, publisher, str(tmp_path))
    reconciler.remember(plan.job_id, store.url)
    assert [o.job_id for o in reconciler.run_once()] == [plan.job_id]
    # When it is cancelled
    broker.cancel(client, store, plan)
    [outcome] = reconciler.run_once()
    # Then that pass is its last: no reconciler, this one or a new one, watches it again
    assert outcome.skipped == "cancelled"
    assert reconciler.run_once() == []
    assert Reconciler(client, publisher, str(tmp_path)).run_once() == []
    assert not client.sismember(keys.active_jobs(), plan.job_id)


@pytest.mark.parametrize("size", [1000, 20000])
def test_the_redis_memory_of_a_queued_job_does_not_grow_with_its_shards(redis_server, tmp_path, size):
    # Given a job of 1,000 or 20,000 shards, enqueued with no worker yet
    store, plan = plan_rows(tmp_path, size)
    client = redis_server.client()
    reconcile_job(client, publisher_for(redis_server), store, plan, grace_s=0)
    # Then what Redis holds for it (its messages, its records) is one window's worth either way
    held = {k.decode(): client.memory_usage(k) for k in client.keys("*")}
    assert sum(held.values()) < 80_000, held


def test_a_cancelled_jobs_leftover_messages_are_drained_and_never_replaced(redis_server, tmp_path, tiny_embed_model):
    # Given a job of 100 shards with its window queued, then cancelled
    from common.dispatch import shard_message
    from common.settings import load_settings
    from workers.engines.base import EngineSpec
    from workers.engines.registry import create_engine
    from workers.runner import WorkerContext, handle_message

    store, plan = plan_rows(tmp_path, 100, backend="simulated", dtype="fp32")
    client, publisher = redis_server.client(), publisher_for(redis_server)
    reconcile_job(client, publisher, store, plan, grace_s=0)
    broker.cancel(client, store, plan)
    engine = create_engine(EngineSpec(model=str(tiny_embed_model), backend="simulated", dtype="fp32"))
    ctx = WorkerContext(name="w", engine=engine, settings=load_settings({"QWEN3B_BROKER_URL": redis_server.url}),
                        redis=client, description={"model_identity": MODEL.identity}, output_root=str(tmp_path),
                        input_roots=(str(tmp_path),))
    ctx.publisher = publisher
    # When a worker takes its queued messages
    outcomes = {handle_message(ctx, shard_message(plan, store.url, plan.shard_at(o)).model_dump()) for o in range(20)}
    # Then each is skipped, and nothing new is published in their place
    assert outcomes == {"cancelled"}
    assert int(client.get(keys.job_cursor(plan.job_id))) == defaults.WINDOW_MIN
    assert client.hlen(keys.job_queued(plan.job_id)) == defaults.WINDOW_MIN - 20


def test_a_done_bit_forged_in_redis_cannot_make_a_shard_skipped_for_good(redis_server, tmp_path):
    # Given a job whose next shard's done bit is set in Redis by someone (no record in the store)
    store, plan = plan_rows(tmp_path, 40)
    client, publisher = redis_server.client(), publisher_for(redis_server)
    reconcile_job(client, publisher, store, plan, grace_s=0)  # shards 0..31 queued
    client.setbit(keys.job_done(plan.job_id), 35, 1)
    commit_directly(store, plan, range(32))  # the workers commit the window
    for ordinal in range(32):
        dispatch.take(client, plan.job_id, plan.shard_at(ordinal), "w1")
        dispatch.announce(client, plan.job_id, plan.shard_at(ordinal), "c", 1, 1, 0, 1)
    window.top_up(client, publisher, plan, store.url, target=32)  # it skips the forged shard
    queued = sorted(int(v.split()[1]) for v in client.hvals(keys.job_queued(plan.job_id)))
    assert 35 not in queued and int(client.get(keys.job_cursor(plan.job_id))) == 40
    # When a reconciler passes
    outcome = reconcile_job(client, publisher, store, plan, grace_s=10)
    # Then the forged shard is published again: the store, not Redis, says what is done
    assert outcome.republished == [35]
