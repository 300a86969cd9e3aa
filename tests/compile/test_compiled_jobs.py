"""Compiled backends in the pipeline: a job on an onnx worker, one artifact per key however many
jobs compile it, and a clear error where artifacts are missing."""

import json
import subprocess
import sys

import numpy as np
import pyarrow.dataset as ds

from common.artifacts import ArtifactStore
from common.model_identity import model_ref
from tests.compile.conftest import QUEUE_SEQLENS
from tests.integration.conftest import assert_every_id_exactly_once, write_corpus
from harness import cluster
from workers.engines.base import EngineSpec


def vectors_by_id(out) -> dict:
    table = ds.dataset(out / "data", format="parquet").to_table(columns=["id", "embedding"]).to_pydict()
    return {i: np.asarray(v, dtype=np.float64) for i, v in zip(table["id"], table["embedding"])}


def test_a_job_on_an_onnx_worker_matches_the_torch_engine(queued_compile, local_cluster, tiny_embed_model,
                                                           tiny_engine, tmp_path):
    store_root = queued_compile[1]
    corpus = tmp_path / "corpus.jsonl"
    ids = write_corpus(corpus, 300)
    local_cluster.start_workers(1, tiny_embed_model, backend="onnx",
                                env={"QWEN3B_ARTIFACT_STORE": str(store_root)})
    out = tmp_path / "out"
    done = local_cluster.producer("submit", corpus, "--model", tiny_embed_model, "--out", out, "--backend", "onnx",
                                  "--dtype", "fp32", "--seqlens", ",".join(map(str, QUEUE_SEQLENS)),
                                  "--shard-rows", 100, "--wait", timeout_s=300)
    assert done.returncode == 0, done.stdout + done.stderr + local_cluster.logs()
    assert_every_id_exactly_once(ids, out)
    texts = [json.loads(line)["text"] for line in corpus.read_text().splitlines()]
    reference = tiny_engine("embed", dtype="fp32", seqlens=QUEUE_SEQLENS).embed(texts).vectors
    got = vectors_by_id(out)
    worst = min(float(got[i] @ reference[i] / np.linalg.norm(got[i]) / np.linalg.norm(reference[i])) for i in ids)
    assert worst >= 0.99999


def test_two_jobs_compiling_one_key_at_once_publish_one_artifact(tiny_embed_model, tmp_path):
    env = dict(cluster.base_env("redis://127.0.0.1:1/0"), QWEN3B_ARTIFACT_STORE=str(tmp_path / "artifacts"))
    command = [sys.executable, "-m", "producer", "compile", "--model", str(tiny_embed_model), "--backend", "onnx",
               "--dtype", "fp32", "--seqlens", "64", "--batch", "2", "--local"]
    jobs = [subprocess.Popen(command, env=env, cwd=cluster.REPO_ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outputs = [job.communicate(timeout=300)[0] for job in jobs]
    assert [job.returncode for job in jobs] == [0, 0], outputs
    store = ArtifactStore(tmp_path / "artifacts")
    found = store.find(model_ref(str(tiny_embed_model)), "onnx", "embed", "fp32")
    assert len(found) == 1
    published = [o for o in outputs if ": published" in o]
    assert len(published) >= 1, outputs  # both may finish; at most one rename can win
    assert sum(": published" in o for o in outputs) + sum(": exists" in o for o in outputs) == 2, outputs
    assert list((tmp_path / "artifacts" / ".staging").iterdir()) == []
    assert len(list((tmp_path / "artifacts").glob("*/onnx/embed/fp32/*"))) == 1


def test_an_onnx_worker_without_artifacts_fails_at_start_naming_the_compile_command(tiny_embed_model, tmp_path):
    env = dict(cluster.base_env("redis://127.0.0.1:1/0"), QWEN3B_ARTIFACT_STORE=str(tmp_path / "empty"))
    done = subprocess.run([sys.executable, "-m", "workers", "start", "--model", str(tiny_embed_model),
                           "--backend", "onnx", "--dtype", "int8"], env=env, cwd=cluster.REPO_ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    message = " ".join((done.stdout + done.stderr).split())
    assert "no compiled onnx artifacts" in message
    assert f"producer compile --model {tiny_embed_model} --backend onnx --task embed --dtype int8" in message


def test_a_job_longer_than_the_compiled_lengths_is_refused_clearly(queued_compile, tiny_embed_model, monkeypatch):
    import pytest

    from common.errors import ConfigError
    from workers.engines.onnx_engine import OnnxEngine

    monkeypatch.setenv("QWEN3B_ARTIFACT_STORE", str(queued_compile[1]))
    engine = OnnxEngine(EngineSpec(model=str(tiny_embed_model), backend="onnx", dtype="fp32"))
    with pytest.raises(ConfigError, match="compiled for \\[64, 128\\].*--seqlens 64,128"):
        engine.configured((128, 512))
    assert engine.configured((64,)).spec.seqlens == (64,)


def test_a_compile_that_kills_its_worker_every_time_fails_after_the_attempt_cap(redis_server, tiny_embed_model,
                                                                                 tmp_path):
    env = {"QWEN3B_ARTIFACT_STORE": str(tmp_path / "artifacts"), "QWEN3B_MAX_ATTEMPTS": "2",
           "QWEN3B_FAULTS": "compile:kill"}
    worker = cluster.start_compile_worker(redis_server.url, "compile-oom", tmp_path / "logs", env=env)
    try:
        cluster.wait_for_workers(redis_server.client(), [worker])
        done = cluster.run_cli("producer", ["compile", "--model", str(tiny_embed_model), "--seqlens", "64",
                                            "--batch", "2", "--wait"], redis_server.url, timeout_s=180, env=env)
    finally:
        worker.stop(timeout_s=5)
    assert done.returncode == 1, done.stdout + done.stderr + worker.log()[-3000:]
    assert "the compile worker was lost 2 times on this artifact" in done.stderr
    assert not list((tmp_path / "artifacts").glob("*/onnx/*/*/*/manifest.json"))
