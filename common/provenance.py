"""Where a recorded figure came from: the command, the git revision of the code (and whether the
tree was clean), the machine and the time. Every benchmark and eval JSON carries this block, and
docs/performance.md (scripts/perf_docs.py) prints it next to each figure. A benchmark takes it
when it starts and confirms it when it ends (the tree may change while it runs)."""

import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def git_revision(repo: Path = REPO) -> tuple[str, bool]:
    """(short revision, whether the work tree matched it); ("unknown", False) outside a checkout."""
    try:
        rev = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown", False
    return (rev or "unknown"), bool(rev) and not dirty


def provenance(program: str, args: list[str] | None = None) -> dict:
    """program: how the tool is invoked ("python -m workers.bench.engine", "workers bench"); args:
    its arguments (default: this process's)."""
    rev, clean = git_revision()
    args = sys.argv[1:] if args is None else args
    return {"command": " ".join([program, *map(shlex.quote, args)]), "git_revision": rev, "clean_tree": clean,
            "recorded_at_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": {"cpu": cpu_name(), "cpus": os.cpu_count(), "python": platform.python_version()}}


def confirm(record: dict) -> dict:
    """`record`, taken when a run started, checked again at its end: the code that ran is the
    revision named only if the tree was clean at both ends and HEAD did not move."""
    rev, clean = git_revision()
    if record["clean_tree"] and not (clean and rev == record["git_revision"]):
        record = dict(record, clean_tree=False, changed_during_run=True)
    return record


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
