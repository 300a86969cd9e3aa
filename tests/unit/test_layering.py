"""The one-way rules of docs/architecture.md, checked on the import statements of every module."""

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# package -> the packages it must never import
FORBIDDEN = {
    "common": {"producer", "workers", "harness", "qwen3batch"},
    "workers": {"producer", "harness", "qwen3batch"},
    "producer": {"harness", "qwen3batch"},
}


def imported_packages(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


TOOLS = ("workers/bench/",)  # benchmarks over the runtime: they may drive a local cluster (harness)


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_go_one_way(package):
    broken = {}
    for path in sorted((REPO / package).rglob("*.py")):
        name = str(path.relative_to(REPO))
        forbidden = FORBIDDEN[package] - ({"harness"} if name.startswith(TOOLS) else set())
        broken[name] = sorted(imported_packages(path) & forbidden)
    assert not {k: v for k, v in broken.items() if v}


def test_engines_know_nothing_of_celery_or_jobs():
    for path in sorted((REPO / "workers" / "engines").rglob("*.py")):
        text = path.read_text()
        assert "celery" not in imported_packages(path), path
        for job_module in ("common.io.store", "common.jobstate", "common.dispatch", "workers.runner"):
            assert job_module not in text, (path, job_module)
