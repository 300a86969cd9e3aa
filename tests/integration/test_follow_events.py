"""A follower (`--wait`) hears a job end when its last shard is announced, not at its next poll."""

import threading
import time
from types import SimpleNamespace

import redis

from common import dispatch, keys
from common.schemas import ShardSpec
from producer.events import ShardEvents

JOB = "job-events-1"


def client_of(server) -> redis.Redis:
    return redis.Redis.from_url(server.url)


def shard(ordinal: int) -> ShardSpec:
    return ShardSpec(shard_id=f"00000000-{ordinal:012d}", ordinal=ordinal, file_index=0, row_start=ordinal,
                     row_end=ordinal + 1)


def announce_later(server, ordinals, after_s: float) -> threading.Thread:
    def run():
        time.sleep(after_s)
        for ordinal in ordinals:
            dispatch.announce(client_of(server), JOB, shard(ordinal), "c", rows_in=1, rows_out=1)
    thread = threading.Thread(target=run)
    thread.start()
    return thread


def timed_wait(events: ShardEvents, pending: int, seconds: float) -> float:
    started = time.monotonic()
    events.wait(pending, seconds)
    return time.monotonic() - started


def test_a_follower_wakes_once_every_pending_shard_is_announced(redis_server):
    events = ShardEvents(client_of(redis_server), JOB)
    announcer = announce_later(redis_server, [1, 2], after_s=0.3)
    waited = timed_wait(events, 2, seconds=30)
    announcer.join()
    events.close()
    assert waited < 15, f"the follower slept {waited:.1f}s of its 30s interval after both shards were announced"


def test_a_follower_that_hears_fewer_shards_than_are_pending_waits_out_its_interval(redis_server):
    events = ShardEvents(client_of(redis_server), JOB)
    announcer = announce_later(redis_server, [1, 1], after_s=0.1)  # one shard twice (a duplicate's re-announcement)
    waited = timed_wait(events, 2, seconds=1.5)
    announcer.join()
    events.close()
    assert waited >= 1.5


def test_announcements_of_another_job_do_not_wake_a_follower(redis_server):
    events = ShardEvents(client_of(redis_server), JOB)
    client_of(redis_server).publish(keys.job_events("another-job"), "s-00001")
    assert timed_wait(events, 1, seconds=1.0) >= 1.0
    events.close()


def test_a_follower_whose_redis_goes_away_keeps_its_poll_interval_without_an_error(redis_server):
    events = ShardEvents(client_of(redis_server), JOB)
    redis_server.stop()
    assert timed_wait(events, 1, seconds=1.0) >= 1.0
    assert events.pubsub is None


def test_a_follower_without_redis_just_sleeps():
    assert timed_wait(ShardEvents(None, JOB), 1, seconds=0.5) >= 0.5


def test_an_announcement_to_a_redis_that_is_down_is_dropped_quietly(redis_server):
    from workers.runner import announce

    worker = SimpleNamespace(redis=client_of(redis_server), reconciler=None)
    plan = SimpleNamespace(job_id=JOB, shards_total=1)
    record = SimpleNamespace(rows=1)
    redis_server.stop()
    announce(worker, None, plan, shard(1), record)  # no exception: the shard is delivered and announced again
