"""A follower's wait between two looks at a job: the poll interval, cut short when as many shards
as were still pending have been announced done on the job's pub/sub channel (common/dispatch.announce).

An announcement is only a hint that the store is worth reading now: a follower that misses one (it
subscribed late, Redis restarted, a message was dropped) waits out its poll interval as before, so
nothing is lost, only the saving."""

import time

import redis

from common import keys


class ShardEvents:
    def __init__(self, client: redis.Redis | None, job_id: str):
        self.pubsub = None
        if client is None:
            return
        try:
            self.pubsub = client.pubsub(ignore_subscribe_messages=True)
            self.pubsub.subscribe(keys.job_events(job_id))
        except redis.RedisError:
            self.close()

    def wait(self, pending: int, seconds: float) -> None:
        """Sleep up to `seconds`; return early once `pending` distinct shards were announced (the
        count, not the ids: a follower does not hold the ids of a job's pending shards)."""
        deadline = time.monotonic() + seconds
        heard: set[str] = set()
        while (left := deadline - time.monotonic()) > 0:
            if self.pubsub is None:
                time.sleep(left)
                return
            try:
                message = self.pubsub.get_message(timeout=left)
            except (redis.RedisError, OSError):
                self.close()  # the poll interval from here on; the next follow subscribes anew
                continue
            if message and message.get("type") == "message":
                data = message["data"]
                heard.add(data.decode(errors="replace") if isinstance(data, bytes) else str(data))
                if pending and len(heard) >= pending:
                    return

    def close(self) -> None:
        if self.pubsub is not None:
            try:
                self.pubsub.close()
            except (redis.RedisError, OSError):
                pass
        self.pubsub = None
