"""Which shards the reconciler publishes again: those nothing would ever run (common/reconcile.py)."""

import numpy as np

from common.reconcile import Deliveries, find_orphans

JOB = "job-1"
NOW, GRACE = 1_000_000.0, 10.0
A, B, C = "00000000-000000000000", "00000000-000000000010", "00000000-000000000020"
ORDINAL = {A: 0, B: 1, C: 2}


def seen(queued=None, running=None, holders=None, live=(), waiting=0, cursor=3, held=()) -> Deliveries:
    queued = {shard: (published, ORDINAL[shard]) for shard, published in (queued or {}).items()}
    running = {shard: dict(r, ordinal=ORDINAL[shard]) for shard, r in (running or {}).items()}
    return Deliveries(queued, running, holders or {}, set(live), waiting, cursor, set(held))


def orphans(deliveries, done=(False, False, False)) -> list[int]:
    return find_orphans(JOB, np.array(done), deliveries, NOW, GRACE)


def test_published_shards_with_no_message_and_no_holder_are_orphans():
    # a Redis restart without persistence that kept the cursor (nothing else): every shard below it
    assert orphans(seen()) == [0, 1, 2]


def test_shards_beyond_the_cursor_wait_for_the_window_not_for_the_reconciler():
    assert orphans(seen(cursor=1)) == [0]


def test_done_shards_are_never_orphans_whatever_redis_says():
    assert orphans(seen(queued={A: NOW - 500}), done=(True, True, False)) == [2]


def test_a_shard_waiting_in_the_queue_or_held_by_a_live_worker_is_left_alone():
    deliveries = seen(queued={A: NOW - 500}, waiting=1, holders={(JOB, B): "w1"}, live={"w1"}, held={1})
    assert orphans(deliveries) == [2]


def test_a_dead_workers_shard_is_an_orphan_once_its_heartbeat_is_gone():
    running = {A: {"worker": "dead@host", "since": NOW - 60}}
    assert 0 in orphans(seen(running=running, live={"w1"}))


def test_a_shard_taken_a_moment_ago_is_trusted_before_the_heartbeat_shows_it():
    running = {A: {"worker": "w1", "since": NOW - 1}}
    assert 0 not in orphans(seen(running=running, live={"w1"}))
    # but a live worker that moved on without finishing it (its pool child was killed) lost it
    stale = {A: {"worker": "w1", "since": NOW - 60}}
    assert 0 in orphans(seen(running=stale, live={"w1"}))


def test_a_queued_record_whose_message_is_gone_is_stale_once_the_queue_is_empty():
    queued = {A: NOW - 60, B: NOW - 1}
    assert orphans(seen(queued=queued, waiting=0)) == [0, 2]
    assert orphans(seen(queued=queued, waiting=3)) == [2]


def test_a_record_that_names_a_shard_outside_the_plan_is_ignored():
    deliveries = Deliveries({A: (NOW - 60, 7)}, {B: {"worker": "x", "since": 0, "ordinal": "1"}}, {}, set(), 0, 0)
    assert orphans(deliveries) == []
