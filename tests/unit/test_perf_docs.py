"""docs/performance.md is generated from bench-results/*.json (scripts/perf_docs.py): a figure in the
docs can never drift from the JSON its benchmark wrote."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_performance_page_is_what_the_recorded_json_gives():
    run = subprocess.run([sys.executable, str(REPO / "scripts" / "perf_docs.py"), "--check"], capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
