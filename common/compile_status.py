"""The state of each requested artifact, in Redis, for `producer compile --wait` and status.

The artifact store is the truth about what is published; these records only say how a compile
job went (queued, running, published, exists, failed and why), and expire after a week.
"""

import json
import time

from common import defaults, keys

STATES = ("queued", "running", "published", "exists", "failed")
DONE = ("published", "exists", "failed")


def write_status(client, artifact_id: str, job: str, state: str, **fields) -> None:
    record = {"artifact": artifact_id, "job": job, "state": state, "at": time.time(), **fields}
    client.set(keys.compile_status(artifact_id), json.dumps(record), ex=defaults.COMPILE_STATUS_TTL_S)


def read_status(client, artifact_id: str) -> dict | None:
    raw = client.get(keys.compile_status(artifact_id))
    return json.loads(raw) if raw else None
