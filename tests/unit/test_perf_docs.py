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


def perf_docs():
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import perf_docs
    finally:
        sys.path.pop(0)
    return perf_docs


def test_a_goal_is_judged_against_the_threshold_the_benchmark_recorded():
    line = perf_docs().goals_line({"steady": 0.97, "end_to_end": 0.90},
                                  [("steady", "steady", 0.96), ("end to end", "end_to_end", 0.92)])
    assert line == "Goals: steady 96% (>= 97%: **missed**); end to end 92% (>= 90%: met)."


def test_figures_recorded_without_goals_get_no_verdict():
    assert "met" not in perf_docs().goals_line(None, [("steady", "steady", 0.99)])
