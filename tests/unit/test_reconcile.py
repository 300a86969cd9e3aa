"""Which shards the reconciler publishes again: those nothing would ever run (common/reconcile.py)."""

import json

import pytest

from common.io.store import OutputStore
from common.jobstate import read_state
from common.reconcile import Deliveries, find_orphans
from common.schemas import JobSpec, ModelRef
from producer.plan import plan_job

MODEL = ModelRef(source="/models/m", identity="0" * 64, tag="m-00000000")
NOW, GRACE = 1_000_000.0, 10.0
A, B, C = "00000-000000000000", "00000-000000000010", "00000-000000000020"


@pytest.fixture
def state(tmp_path):
    (tmp_path / "a.jsonl").write_text("".join(json.dumps({"id": i, "text": "t"}) + "\n" for i in range(30)))
    store = OutputStore(tmp_path / "out")
    plan, _ = plan_job(str(tmp_path / "a.jsonl"), JobSpec(model=MODEL, shard_rows=10), store)
    return read_state(store, plan)


def seen(queued=None, running=None, holders=None, live=(), waiting=0) -> Deliveries:
    return Deliveries(queued or {}, running or {}, holders or {}, set(live), waiting)


def test_shards_with_no_message_and_no_holder_are_orphans(state):
    # a Redis restart without persistence: no record of anything
    assert find_orphans(state, seen(), NOW, GRACE) == [A, B, C]


def test_a_shard_waiting_in_the_queue_or_held_by_a_live_worker_is_left_alone(state):
    job = state.plan.job_id
    deliveries = seen(queued={A: NOW - 500}, waiting=1, holders={(job, B): "w1"}, live={"w1"})
    assert find_orphans(state, deliveries, NOW, GRACE) == [C]


def test_a_dead_workers_shard_is_an_orphan_once_its_heartbeat_is_gone(state):
    running = {A: {"worker": "dead@host", "since": NOW - 60}}
    assert A in find_orphans(state, seen(running=running, live={"w1"}), NOW, GRACE)


def test_a_shard_taken_a_moment_ago_is_trusted_before_the_heartbeat_shows_it(state):
    running = {A: {"worker": "w1", "since": NOW - 1}}
    assert A not in find_orphans(state, seen(running=running, live={"w1"}), NOW, GRACE)
    # but a live worker that moved on without finishing it (its pool child was killed) lost it
    stale = {A: {"worker": "w1", "since": NOW - 60}}
    assert A in find_orphans(state, seen(running=stale, live={"w1"}), NOW, GRACE)


def test_a_queued_record_whose_message_is_gone_is_stale_once_the_queue_is_empty(state):
    queued = {A: NOW - 60, B: NOW - 1}
    assert find_orphans(state, seen(queued=queued, waiting=0), NOW, GRACE) == [A, C]
    assert find_orphans(state, seen(queued=queued, waiting=3), NOW, GRACE) == [C]
