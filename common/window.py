"""The window: a few messages per live worker wait in a job's queue, never the whole job.

A job of 5e5 shards does not put 5e5 messages in Redis. Its shards are published in ordinal
order from a cursor, as many as the window holds (WINDOW_PER_WORKER per live worker of the
queue, at least WINDOW_MIN), and topped up as they finish: by the worker that finishes one (when
the window has fallen below half), by each reconciler pass, and at submit and resume. Redis
then holds O(workers) messages and records per job, and a submit publishes in milliseconds
whatever the job's size.

The cursor and the done bits live in Redis and are rebuilt from the store after a loss
(`open_window`): the done bits of the manifest are OR-ed in, and the cursor starts again at 0,
skipping the shards that are done. A top-up never runs before that (no cursor: nothing to do), so
a worker that commits right after a Redis restart cannot publish shards the store says are done.
"""

import time

import numpy as np
import redis

from common import defaults, dispatch, heartbeats, keys
from common.io.manifest import Manifest
from common.io.plans import Plan

SCAN_BYTES = 4096  # done bits read at a time while looking for shards to publish (32,768 shards)
WINDOW_LOCK_S = 10.0
SERVING_CACHE_S = 5.0  # how long a process reuses its count of a queue's live workers
_serving: dict[str, tuple[float, int]] = {}


def window_size(live_workers: int) -> int:
    return max(defaults.WINDOW_MIN, defaults.WINDOW_PER_WORKER * live_workers)


def serving(client: redis.Redis, queue: str) -> int:
    """Live workers of `queue`, counted from the heartbeats at most every few seconds per process."""
    cached = _serving.get(queue)
    if cached and time.monotonic() - cached[0] < SERVING_CACHE_S:
        return cached[1]
    count = sum(1 for w in heartbeats.live_workers(client) if w.get("queue") == queue)
    _serving[queue] = (time.monotonic(), count)
    return count


def open_window(client: redis.Redis, plan: Plan, manifest: Manifest) -> bool:
    """Set the job's window up from the store when Redis has none (a new job, or after a loss):
    the manifest's done bits OR-ed into Redis's, the cursor at 0. True when it did."""
    cursor_key, done_key = keys.job_cursor(plan.job_id), keys.job_done(plan.job_id)
    if client.exists(cursor_key):
        return False
    scratch = f"{done_key}:rebuild"
    with client.pipeline(transaction=True) as pipe:
        # np.packbits and Redis both put bit 0 in the highest bit of byte 0
        pipe.set(scratch, np.packbits(manifest.done_mask()).tobytes())
        pipe.bitop("OR", done_key, done_key, scratch)
        pipe.delete(scratch)
        pipe.set(cursor_key, 0, nx=True)
        pipe.execute()
    return True


def top_up(client: redis.Redis, publisher: dispatch.Publisher, plan: Plan, output: str,
           target: int | None = None, only_below_half: bool = False) -> int:
    """Publish shards from the cursor until `target` messages of the job wait (default: the window
    for the queue's live workers). only_below_half: do nothing unless fewer than half wait (a worker
    after each shard: one top-up per half window, not one per shard). Returns the shards published."""
    target = target or window_size(serving(client, plan.queue))
    waiting = client.hlen(keys.job_queued(plan.job_id))
    if waiting >= ((target + 1) // 2 if only_below_half else target):
        return 0
    lock = keys.job_window_lock(plan.job_id)
    if not client.set(lock, "1", nx=True, px=int(WINDOW_LOCK_S * 1000)):
        return 0  # another process is topping this job up
    try:
        cursor = client.get(keys.job_cursor(plan.job_id))
        if cursor is None:
            return 0  # no window yet: the reconciler sets it up from the store first
        need = target - client.hlen(keys.job_queued(plan.job_id))
        ordinals, cursor = next_pending(client, plan, int(cursor), need)
        shards = [plan.shard_at(o) for o in ordinals]
        return publisher.publish(plan, output, shards, cursor=cursor)
    finally:
        client.delete(lock)


def next_pending(client: redis.Redis, plan: Plan, cursor: int, need: int) -> tuple[list[int], int]:
    """Up to `need` ordinals from `cursor` on whose done bit is clear, and the cursor after them."""
    found: list[int] = []
    total = plan.shards_total
    while len(found) < need and cursor < total:
        first_byte = cursor // 8
        raw = client.getrange(keys.job_done(plan.job_id), first_byte, first_byte + SCAN_BYTES - 1)
        end = min(total, (first_byte + SCAN_BYTES) * 8)
        bits = np.zeros(end - first_byte * 8, dtype=bool)
        known = np.unpackbits(np.frombuffer(raw, dtype=np.uint8))[:len(bits)].astype(bool)
        bits[:len(known)] = known
        free = np.flatnonzero(~bits[cursor - first_byte * 8:]) + cursor
        take = free[:need - len(found)].tolist()
        found += take
        cursor = take[-1] + 1 if len(found) == need else end
    return found, cursor
