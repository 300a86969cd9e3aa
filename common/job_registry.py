"""The jobs a cluster is running, written where they survive what Redis and processes do not:
a small file per job in the output root, `<root>/.qwen3b-jobs/<job>.json`.

Redis's set of active jobs (common/dispatch.py) is lost in a restart without persistence, and so
is every queue; a worker's memory of the jobs it ran is lost when its pool child is replaced (an
out-of-memory kill, the hard time limit, a host restart). The reconciler (common/reconcile.py)
reads both this folder and Redis, so a job is watched until it is finished whatever was lost.
The producer writes the file when its output lies in its QWEN3B_OUTPUT_ROOT; every worker writes
it for a job it takes a message of (once; its output is inside the worker's root by then).
"""

import json
import os
from pathlib import Path

from common.paths import is_within
from common.schemas import JOB_NAME

FOLDER = ".qwen3b-jobs"


def register(root: str | os.PathLike, job_id: str, output: str) -> None:
    folder = Path(root) / FOLDER
    path = folder / f"{job_id}.json"
    if path.exists() or not JOB_NAME.match(job_id) or not is_within(output, root):
        return
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{job_id}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps({"job_id": job_id, "output": output}))
    os.replace(tmp, path)


def registered(root: str | os.PathLike) -> dict[str, str]:
    """job -> output, for the entries whose output still lies inside the root."""
    found = {}
    folder = Path(root) / FOLDER
    if not folder.is_dir():
        return found
    for path in folder.glob("*.json"):
        try:
            entry = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        job, output = entry.get("job_id"), entry.get("output")
        if isinstance(job, str) and JOB_NAME.match(job) and isinstance(output, str) and is_within(output, root):
            found[job] = output
    return found


def forget(root: str | os.PathLike, job_id: str) -> None:
    if JOB_NAME.match(job_id):
        (Path(root) / FOLDER / f"{job_id}.json").unlink(missing_ok=True)
