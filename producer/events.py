"""A follower's wait between two looks at a job: the poll interval, cut short when every shard
still pending has been announced done on the job's pub/sub channel (workers/runner.announce).

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

    def wait(self, pending: set[str], seconds: float) -> None:
        """Sleep up to `seconds`; return early once every shard in `pending` was announced."""
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
                if pending and pending <= heard:
                    return

    def close(self) -> None:
        if self.pubsub is not None:
            try:
                self.pubsub.close()
            except (redis.RedisError, OSError):
                pass
        self.pubsub = None
