"""Worker heartbeats in Redis: who is alive, on which device, serving which queue, holding which
shard. A key per worker that expires after QWEN3B_HEARTBEAT_TTL_S: a worker that stops beating
(killed, paused, its host gone, stuck holding the GIL) disappears on its own, and the reconciler
(common/reconcile.py) then publishes the shard it held again."""

import json

import redis

from common import keys


def publish(client: redis.Redis, name: str, state: dict, ttl_s: int) -> None:
    client.set(keys.worker_heartbeat(name), json.dumps(state), ex=ttl_s)


def live_workers(client: redis.Redis) -> list[dict]:
    """Every worker whose heartbeat has not expired, each with its name, sorted by name."""
    names = [key.decode().split(":", 2)[2] for key in client.scan_iter(match=keys.worker_heartbeat_pattern(), count=500)]
    beats = client.mget([keys.worker_heartbeat(n) for n in names]) if names else []
    found = []
    for name, raw in zip(names, beats):
        if raw:
            try:
                found.append(dict(json.loads(raw), name=name))
            except ValueError:
                continue  # not ours, or written by hand: ignore it rather than fail every reader
    return sorted(found, key=lambda w: w["name"])


def holders(workers: list[dict]) -> dict[tuple[str, str], str]:
    """(job, shard) -> the live worker running it, from the heartbeats."""
    return {(w.get("current_job", ""), w["current_shard"]): w["name"] for w in workers if w.get("current_shard")}
