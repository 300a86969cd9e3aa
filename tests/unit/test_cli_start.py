"""What a CLI process does not pay for at start: pyarrow's pandas probe (common/cli_runner.main; pandas
still works for whoever needs it), and torch and transformers for checking a torch job's model. Each
test is its own Python process: what a process imported, and the probe's answer, last its life."""

import json
import subprocess
import sys

from harness import cluster
from harness.corpora import write_corpus

# Runs a CLI's argv in this process the way its entry point would, then reports what was imported.
REPORT_PANDAS = "import atexit, sys; atexit.register(lambda: print('PANDAS', 'pandas' in sys.modules))\n"


def run_producer(launch: str, args: list[str]) -> subprocess.CompletedProcess:
    code = REPORT_PANDAS + launch
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300,
                          cwd=cluster.REPO_ROOT, env=cluster.base_env("redis://unused", {"QWEN3B_SIM_BATCH_S": "0"}))


def local_job_args(tmp_path, model, name: str) -> list[str]:
    corpus = tmp_path / "corpus.jsonl"
    write_corpus(corpus, 120)
    return ["submit", str(corpus), "--model", str(model), "--out", str(tmp_path / name), "--local",
            "--backend", "simulated", "--dtype", "fp32", "--shard-rows", "50"]


def pandas_line(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 0, done.stdout + done.stderr
    return next(line for line in done.stdout.splitlines() if line.startswith("PANDAS"))


def test_a_local_job_run_by_the_producer_cli_never_imports_pandas(tmp_path, tiny_embed_model):
    done = run_producer("from producer.cli import main; main()", local_job_args(tmp_path, tiny_embed_model, "out"))
    assert pandas_line(done) == "PANDAS False"
    assert json.loads((tmp_path / "out" / "_SUCCESS.json").read_text())["rows_out"] == 120


def test_without_the_skipped_probe_the_same_job_imports_pandas(tmp_path, tiny_embed_model):
    # What the test above guards against: pyarrow imports pandas on its first array
    launch = "from common.cli_runner import run; from producer.cli import app; run(app, 'producer', sys.argv[1:])"
    done = run_producer(launch, local_job_args(tmp_path, tiny_embed_model, "out"))
    assert pandas_line(done) == "PANDAS True"


def test_pyarrow_still_converts_to_and_from_pandas_after_the_skipped_probe():
    code = """
import sys
from common.cli_runner import skip_pandas_probe
skip_pandas_probe()
import pyarrow as pa
assert "pandas" not in sys.modules
frame = pa.table({"id": [1, 2], "text": ["a", None]}).to_pandas()
assert list(frame["id"]) == [1, 2] and frame["text"].isna().tolist() == [False, True]
import pandas as pd
assert pa.array(pd.Series([1.5, None])).null_count == 1
assert pa.Table.from_pandas(pd.DataFrame({"x": [3]})).column("x").to_pylist() == [3]
print("OK")
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=cluster.REPO_ROOT, env=cluster.base_env("redis://unused"))
    assert done.returncode == 0 and done.stdout.strip() == "OK", done.stdout + done.stderr


def test_checking_a_torch_jobs_model_at_submit_imports_neither_torch_nor_transformers(tiny_embed_model):
    # They cost `producer submit` 3 s and 500 MB before its first message went out
    code = f"""
import sys
from producer.api import build_spec
from producer.progress import reporter_for
spec = build_spec(model={str(tiny_embed_model)!r}, task="embed", dtype="fp32", backend="torch", device="cpu",
                  client=None, reporter=reporter_for(None, False))
print(spec.model.source, "torch" in sys.modules, "transformers" in sys.modules)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=cluster.REPO_ROOT, env=cluster.base_env("redis://unused"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.split() == [str(tiny_embed_model), "False", "False"]
