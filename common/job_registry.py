"""The jobs a cluster is running, written where they survive what Redis and processes do not:
a small record per job under the output root, `<root>/.qwen3b-jobs/<job>.json` (a folder, or a
prefix of a bucket).

Redis's set of active jobs (common/dispatch.py) is lost in a restart without persistence, and so
is every queue; a worker's memory of the jobs it ran is lost when its pool child is replaced (an
out-of-memory kill, the hard time limit, a host restart). The reconciler (common/reconcile.py)
reads both this registry and Redis, so a job is watched until it is finished whatever was lost.
The producer writes the record under its own QWEN3B_OUTPUT_ROOT and under the root of every live
worker that holds the output (producer/submit.py register_beyond_redis: a job is findable after a
Redis loss even before any worker took a message of it, whatever the producer's environment); every
worker writes it for a job it takes a message of (once; its output is inside the worker's root by then).
"""

import json

from common.io.store import OutputStore
from common.paths import is_within
from common.schemas import JOB_NAME

FOLDER = ".qwen3b-jobs"


def register(root: str, job_id: str, output: str) -> None:
    if not JOB_NAME.match(job_id) or not is_within(output, root):
        return
    store = OutputStore(root)
    key = f"{FOLDER}/{job_id}.json"
    if not store.exists(key):
        store.put(key, json.dumps({"job_id": job_id, "output": output}).encode())


def registered(root: str, seen: dict | None = None) -> dict[str, str]:
    """job -> output, for the records whose output still lies inside the root. seen: records this
    process read before (a record never changes), so a reconciler's pass costs one listing, not a
    read per job."""
    store, found = OutputStore(root), {}
    seen = {} if seen is None else seen
    for name in store.names(FOLDER):
        if not name.endswith(".json") or name.startswith("."):
            continue
        if name not in seen:
            try:
                seen[name] = json.loads(store.read_bytes(f"{FOLDER}/{name}") or b"{}")
            except ValueError:
                continue
        job, output = seen[name].get("job_id"), seen[name].get("output")
        if isinstance(job, str) and JOB_NAME.match(job) and isinstance(output, str) and is_within(output, root):
            found[job] = output
    return found


def forget(root: str, job_id: str) -> None:
    if JOB_NAME.match(job_id):
        OutputStore(root).delete(f"{FOLDER}/{job_id}.json")
