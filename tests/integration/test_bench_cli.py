"""`python -m workers bench` end to end on the tiny model (real instance processes), and the GPU script."""

import json
import os
import shutil
import struct
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
QUEUE_DEPTH = 3


def run_bench(*args: str, timeout_s: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "workers", "bench", *args], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=timeout_s)


@pytest.fixture(scope="module")
def sweep(tiny_embed_model, tmp_path_factory):
    """One sweep, both modes, two CPU instances: (report, JSON path)."""
    out = tmp_path_factory.mktemp("bench") / "perf-tiny.json"
    done = run_bench("--model", str(tiny_embed_model), "--dtype", "fp32", "--instances", "2",
                     "--sweep-batch", "1,2", "--sweep-seqlen", "16,32", "--iterations", "6", "--warmup", "1",
                     "--queue-depth", str(QUEUE_DEPTH), "--percentiles", "50,90,99.9", "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(out.read_text()), out


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_a_sweep_measures_both_modes_at_every_batch_size_and_length(sweep):
    report, _ = sweep
    measured = {(r["mode"], r["batch_size"], r["seqlen"]) for r in report["results"]}
    assert measured == {(m, b, s) for m in ("throughput", "latency") for b in (1, 2) for s in (16, 32)}
    assert all(r["requests"] == 6 and len(r["latencies_ms"]) == 6 for r in report["results"])


def test_the_report_holds_the_requested_percentiles_of_its_own_latencies(sweep):
    report, _ = sweep
    for r in report["results"]:
        latency = r["latency_ms"]
        assert set(latency) == {"avg", "min", "max", "p50", "p90", "p99.9"}
        assert latency["min"] <= latency["p50"] <= latency["p90"] <= latency["p99.9"] <= latency["max"]
        for p in (50, 90, 99.9):
            assert latency[f"p{p:g}"] == pytest.approx(np.percentile(r["latencies_ms"], p), abs=1e-3)


def test_throughput_mode_never_has_more_requests_in_flight_than_the_queue_depth(sweep):
    report, _ = sweep
    for r in report["results"]:
        limit = QUEUE_DEPTH if r["mode"] == "throughput" else 1
        assert r["in_flight_limit"] == limit
        assert 1 <= r["max_in_flight"] <= limit


def test_throughput_is_every_token_of_every_request_over_the_wall_time(sweep):
    report, _ = sweep
    for r in report["results"]:
        assert r["sequences_per_s"] == pytest.approx(r["requests"] * r["batch_size"] / r["wall_s"])
        assert r["tokens_per_s"] == pytest.approx(r["sequences_per_s"] * r["seqlen"])
        assert sum(r["requests_per_instance"].values()) == r["requests"]


def test_the_report_names_its_settings_host_torch_version_and_device(sweep):
    report, _ = sweep
    assert report["settings"]["percentiles"] == [50.0, 90.0, 99.9]
    assert report["settings"]["devices"] == ["cpu"] and report["settings"]["instances_per_device"] == 2
    assert report["model"]["random_weights"] is True
    assert report["torch_version"] and report["device_name"]
    assert {"hostname", "cpu", "python", "load_average_at_start", "load_average_at_end"} <= set(report["host"])
    # Two CPU instances, each pinned to its own cores
    cores = [set(i["cpu_cores"]) for i in report["instances"]]
    assert len(cores) == 2 and not cores[0] & cores[1]


def test_a_sweep_draws_throughput_and_latency_pngs_next_to_its_json(sweep):
    _, out = sweep
    for kind in ("throughput", "latency"):
        width, height = png_size(out.with_name(f"perf-tiny-{kind}.png"))
        assert width > 300 and height > 200


def test_an_instance_whose_engine_cannot_be_created_fails_the_run_with_the_reason(tmp_path):
    done = run_bench("--model", str(tmp_path), "--backend", "no-such-backend", "--iterations", "1",
                     "--out", str(tmp_path / "p.json"))
    assert done.returncode == 1
    assert "instance 0 (cpu) failed while loading its engine" in done.stderr
    assert "unknown backend 'no-such-backend'" in done.stderr
    assert not (tmp_path / "p.json").exists()


def test_the_gpu_script_is_valid_bash():
    subprocess.run(["bash", "-n", "scripts/gpu-bench.sh"], cwd=REPO_ROOT, check=True)


def test_the_gpu_script_dry_run_prints_the_bf16_sweeps_and_the_engine_benchmark():
    # Here there is no GPU: the dry run says where a real run would stop, and still prints its plan
    done = subprocess.run(["bash", "scripts/gpu-bench.sh", "--dry-run"], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHON": sys.executable})
    assert done.returncode == 0, done.stderr
    commands = [line for line in done.stdout.splitlines() if line.startswith("+ ")]
    sweeps = [c for c in commands if " -m workers bench " in c and "--sweep-batch" in c]
    assert {("--task embed" in c, "--task rerank" in c) for c in sweeps} == {(True, False), (False, True)}
    assert all("--dtype bf16" in c and "--devices cuda:0" in c for c in sweeps)
    assert any(c.endswith("-m workers.bench.engine --device cuda:0 --dtype bf16 "
                          "--out bench-results/engine-cuda.json") for c in commands)


def test_the_gpu_script_says_what_it_will_run_and_compares_compiled_graphs_with_eager():
    done = subprocess.run(["bash", "scripts/gpu-bench.sh", "--dry-run"], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHON": sys.executable})
    assert done.returncode == 0, done.stderr
    [plan] = [line for line in done.stdout.splitlines() if line.startswith("gpu-bench: will run")]
    assert "torch.compile" in plan
    commands = [line for line in done.stdout.splitlines() if line.startswith("+ ")]
    for mode in ("inductor", "cudagraphs"):
        [compiled] = [c for c in commands if f"--torch-compile {mode}" in c]
        assert "--sweep-seqlen 512" in compiled and "--devices cuda:0" in compiled


def test_the_gpu_script_runs_a_queued_job_on_the_card_against_the_engine_in_process():
    done = subprocess.run(["bash", "scripts/gpu-bench.sh", "--dry-run", "--redis-server", shutil.which("redis-server")],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHON": sys.executable})
    assert done.returncode == 0, done.stderr
    [queued] = [line for line in done.stdout.splitlines() if line.startswith("+ ") and "workers.bench.pipeline" in line]
    assert "--phases a --device cuda:0" in queued and "--dtype bf16" in queued
    assert queued.endswith("--out bench-results/pipeline-cuda.json")


def test_the_gpu_script_refuses_a_redis_server_that_is_not_there():
    done = subprocess.run(["bash", "scripts/gpu-bench.sh", "--dry-run", "--redis-server", "/no/such/redis-server"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHON": sys.executable})
    assert done.returncode == 1
    assert "--redis-server /no/such/redis-server is not an executable file" in done.stderr


def test_the_gpu_scripts_smoke_run_on_the_cpu_packs_every_figure_including_the_queued_jobs(tmp_path):
    # The whole script on the tiny models, the queued job included, as a lent card would run it
    done = subprocess.run(["bash", "scripts/gpu-bench.sh", "--smoke", "--device", "cpu", "--out-dir",
                           str(tmp_path / "figures"), "--tar", str(tmp_path / "figures.tgz")],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHON": sys.executable})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    with tarfile.open(tmp_path / "figures.tgz") as packed:
        names = set(packed.getnames())
    assert {"perf-cpu-smoke-embed-bf16.json", "perf-cpu-smoke-rerank-bf16.json",
            "perf-cpu-smoke-embed-bf16-inductor.json", "pipeline-cpu-smoke.json"} <= names
    queued = json.loads((tmp_path / "figures" / "pipeline-cpu-smoke.json").read_text())["a"]
    assert queued["device"] == "cpu" and queued["queued"]["status"] == "completed"
