"""A follower (`--wait`) hears a job end when its last shard is announced, not at its next poll."""

import threading
import time
from types import SimpleNamespace

import redis

from common import keys
from producer.events import ShardEvents
from workers.runner import announce

JOB = "job-events-1"


def client_of(server) -> redis.Redis:
    return redis.Redis.from_url(server.url)


def announce_later(server, shard_ids, after_s: float) -> threading.Thread:
    def run():
        time.sleep(after_s)
        worker = SimpleNamespace(redis=client_of(server))
        for shard_id in shard_ids:
            announce(worker, JOB, shard_id)
    thread = threading.Thread(target=run)
    thread.start()
    return thread


def timed_wait(events: ShardEvents, pending: set[str], seconds: float) -> float:
    started = time.monotonic()
    events.wait(pending, seconds)
    return time.monotonic() - started


def test_a_follower_wakes_once_every_pending_shard_is_announced(redis_server):
    events = ShardEvents(client_of(redis_server), JOB)
    announcer = announce_later(redis_server, ["s-00001", "s-00002"], after_s=0.3)
    waited = timed_wait(events, {"s-00001", "s-00002"}, seconds=30)
    announcer.join()
    events.close()
    assert waited < 15, f"the follower slept {waited:.1f}s of its 30s interval after both shards were announced"


def test_a_follower_that_hears_only_some_pending_shards_waits_out_its_interval(redis_server):
    events = ShardEvents(client_of(redis_server), JOB)
    announcer = announce_later(redis_server, ["s-00001", "s-00009"], after_s=0.1)  # s-00009 is not pending
    waited = timed_wait(events, {"s-00001", "s-00002"}, seconds=1.5)
    announcer.join()
    events.close()
    assert waited >= 1.5


def test_announcements_of_another_job_do_not_wake_a_follower(redis_server):
    events = ShardEvents(client_of(redis_server), JOB)
    client_of(redis_server).publish(keys.job_events("another-job"), "s-00001")
    assert timed_wait(events, {"s-00001"}, seconds=1.0) >= 1.0
    events.close()


def test_a_follower_whose_redis_goes_away_keeps_its_poll_interval_without_an_error(redis_server):
    events = ShardEvents(client_of(redis_server), JOB)
    redis_server.stop()
    assert timed_wait(events, {"s-00001"}, seconds=1.0) >= 1.0
    assert events.pubsub is None


def test_a_follower_without_redis_just_sleeps():
    assert timed_wait(ShardEvents(None, JOB), {"s-00001"}, seconds=0.5) >= 0.5


def test_an_announcement_to_a_redis_that_is_down_is_dropped_quietly(redis_server):
    worker = SimpleNamespace(redis=client_of(redis_server))
    redis_server.stop()
    announce(worker, JOB, "s-00001")  # no exception: the follower's poll finds the commit
