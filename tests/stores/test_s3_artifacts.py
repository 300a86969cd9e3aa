"""Compiled artifacts in a bucket (QWEN3B_ARTIFACT_STORE=s3://...): published by a conditional
create of the manifest (the first job wins), served from a local cache keyed by the files'
checksums, against the loopback S3 server."""


import pytest

from common.artifacts import ArtifactStore
from common.schemas import ArtifactManifest
from tests.compile.conftest import request_for
from tests.integration.conftest import assert_every_id_exactly_once, write_corpus

pytestmark = pytest.mark.slow


def test_two_publishes_of_one_key_leave_one_artifact_and_no_second_upload(s3_server, tiny_embed_model, tmp_path):
    bucket = s3_server.bucket()
    store = ArtifactStore(f"s3://{bucket}/artifacts")
    key = request_for(tiny_embed_model, "embed", "fp32", 64).key
    manifests = []
    for text in ("first", "second"):
        with store.staging() as staged:
            (staged / "model.onnx").write_text(text)
            manifest = ArtifactManifest(key=key, model_source=str(tiny_embed_model), model_identity=key.model_identity,
                                        files=("model.onnx",), files_sha256={"model.onnx": "x"}, inputs=(), outputs=(),
                                        validation=None, tool_versions={}, compile_seconds=0,
                                        created_at="2026-11-30T00:00:00+00:00", job=f"job-{text}", host="h")
            manifests.append(store.publish(staged, manifest))
    assert manifests == [True, False]
    assert store.manifest(key).job == "job-first"
    uploads = {k.split("/")[-2] for k in s3_server.keys(bucket, f"artifacts/{key.relative_dir}/upload-")}
    assert uploads == {store.manifest(key).upload}


def test_a_worker_serves_a_job_from_artifacts_compiled_into_a_bucket(local_cluster, s3_server, tiny_embed_model,
                                                                    tmp_path):
    # Given ONNX artifacts compiled with --local into a bucket
    bucket = s3_server.bucket()
    env = {**s3_server.env(), "QWEN3B_ARTIFACT_STORE": f"s3://{bucket}/artifacts",
           "QWEN3B_ARTIFACT_CACHE": str(tmp_path / "cache")}
    compiled = local_cluster.producer("compile", "--model", tiny_embed_model, "--backend", "onnx", "--dtype", "fp32",
                                      "--seqlens", "64,128", "--batch", 4, "--local", env=env, timeout_s=900)
    assert compiled.returncode == 0, compiled.stdout + compiled.stderr
    assert any(k.endswith("/manifest.json") for k in s3_server.keys(bucket, "artifacts/"))
    # When an onnx worker on another "host" (its own cache) serves a job
    ids = write_corpus(tmp_path / "c.jsonl", 120)
    local_cluster.start_workers(1, tiny_embed_model, backend="onnx", env={**env, "QWEN3B_ARTIFACT_CACHE":
                                                                          str(tmp_path / "worker-cache")})
    result = local_cluster.producer("submit", tmp_path / "c.jsonl", "--model", tiny_embed_model, "--out",
                                    tmp_path / "out", "--backend", "onnx", "--dtype", "fp32", "--seqlens", "64,128",
                                    "--wait", "--timeout", "120", env=env)
    # Then it downloaded them once into its cache and the job is whole
    assert result.returncode == 0, result.stderr + local_cluster.logs()
    assert_every_id_exactly_once(ids, tmp_path / "out")
    cached = [p for p in (tmp_path / "worker-cache").iterdir() if not p.name.startswith(".")]
    assert len(cached) == 2 and all((p / ".complete").exists() for p in cached)
