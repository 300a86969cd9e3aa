"""Compile messages and the artifacts they publish (issue 11): a tag that is a path, a source that is
not the model its key names, an artifact whose manifest names another model or whose files changed."""

import pytest

from common.artifacts import ArtifactStore
from common.compile_status import read_status
from common.errors import ModelLoadError
from common.model_identity import model_ref
from common.io.output import sha256_file
from common.schemas import ArtifactKey, ArtifactManifest, Validation
from tests.faults.conftest import send_through_plain_celery, wait_for
from harness import cluster
from workers.engines.base import EngineSpec
from workers.engines.fixed_shape import find_artifacts

pytestmark = pytest.mark.slow


@pytest.fixture
def compile_worker(redis_server, tmp_path):
    store = tmp_path / "artifacts"
    worker = cluster.start_compile_worker(redis_server.url, "compile-w0", tmp_path / "logs",
                                          env={"QWEN3B_ARTIFACT_STORE": str(store)})
    cluster.wait_for_workers(redis_server.client(), [worker])
    yield worker, store
    worker.stop(timeout_s=5)


def request(model, **key_fields) -> dict:
    ref = model_ref(str(model))
    key = dict(model_identity=ref.identity, model_tag=ref.tag, backend="onnx", task="embed", dtype="fp32", batch=2,
               seqlen=64, **key_fields)
    return {"job": "crafted", "model": ref.model_dump(), "key": key, "validation_texts": []}


def test_a_compile_message_whose_tag_is_a_path_is_refused_and_writes_nothing(redis_server, compile_worker,
                                                                            tiny_embed_model, tmp_path):
    worker, store = compile_worker
    message = request(tiny_embed_model)
    message["key"]["model_tag"] = message["model"]["tag"] = "../../../../elsewhere"
    send_through_plain_celery(redis_server.url, "compile", "compile.model", message)
    wait_for(lambda: "refused a compile message" in worker.log(), 60, "the refusal")
    assert "String should match pattern" in worker.log()
    assert not list(tmp_path.glob("**/model.onnx"))


def test_a_compile_message_for_model_a_with_model_b_as_its_source_publishes_nothing(redis_server, compile_worker,
                                                                                   tiny_embed_model, tiny_rerank_model):
    # Given a key naming the embedding model, and the reranker's folder as the source
    worker, store = compile_worker
    a, b = model_ref(str(tiny_embed_model)), model_ref(str(tiny_rerank_model))
    message = request(tiny_embed_model)
    message["model"]["source"] = b.source
    artifact_id = ArtifactKey.model_validate(message["key"]).artifact_id
    # When it is sent
    send_through_plain_celery(redis_server.url, "compile", "compile.model", message)
    # Then the compile fails with the reason, and nothing is published under A's key
    status = wait_for(lambda: (s := read_status(redis_server.client(), artifact_id)) and s["state"] == "failed" and s,
                      120, "the compile job failing")
    assert "refused" in status["reason"] and b.identity[:12] in status["reason"], status
    assert ArtifactStore(store).find(a, "onnx", "embed", "fp32") == []


VALIDATED = Validation(metric="worst_cosine", worst=1.0, mean=1.0, bound=0.99999, samples=1, passed=True)


def publish_fake_artifact(store: ArtifactStore, model, manifest_identity: str) -> ArtifactManifest:
    ref = model_ref(str(model))
    key = ArtifactKey(model_identity=ref.identity, model_tag=ref.tag, backend="onnx", task="embed", dtype="fp32",
                      batch=2, seqlen=64)
    with store.staging() as staged:
        (staged / "model.onnx").write_bytes(b"graph")
        manifest = ArtifactManifest(key=key, model_source=ref.source, model_identity=manifest_identity,
                                    files=("model.onnx",), files_sha256={"model.onnx": sha256_file(staged / "model.onnx")},
                                    inputs=(), outputs=(), validation=VALIDATED, tool_versions={}, compile_seconds=0,
                                    created_at="2026-11-30T00:00:00+00:00", job="crafted", host="h")
        store.publish(staged, manifest)
    return manifest


def test_an_engine_refuses_an_artifact_compiled_from_another_model(tmp_path, tiny_embed_model, tiny_rerank_model):
    store = ArtifactStore(tmp_path / "artifacts")
    publish_fake_artifact(store, tiny_embed_model, model_ref(str(tiny_rerank_model)).identity)
    spec = EngineSpec(model=str(tiny_embed_model), backend="onnx", dtype="fp32", seqlens=(64,))
    with pytest.raises(ModelLoadError, match="refusing to serve another model's outputs"):
        find_artifacts(spec, store)


def test_an_engine_refuses_an_artifact_whose_files_changed_after_publishing(tmp_path, tiny_embed_model):
    store = ArtifactStore(tmp_path / "artifacts")
    manifest = publish_fake_artifact(store, tiny_embed_model, model_ref(str(tiny_embed_model)).identity)
    spec = EngineSpec(model=str(tiny_embed_model), backend="onnx", dtype="fp32", seqlens=(64,))
    assert find_artifacts(spec, store)[0][0] == manifest  # as published: accepted
    (store.folder(manifest.key) / "model.onnx").write_bytes(b"another graph")
    with pytest.raises(ModelLoadError, match="does not match the checksum"):
        find_artifacts(spec, store)


def test_a_symlink_planted_in_the_artifact_store_cannot_lead_a_publish_outside_it(tmp_path, tiny_embed_model):
    store = ArtifactStore(tmp_path / "artifacts")
    ref = model_ref(str(tiny_embed_model))
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "artifacts").mkdir()
    (tmp_path / "artifacts" / ref.tag).symlink_to(tmp_path / "elsewhere")
    with pytest.raises(Exception, match="outside the artifact store"):
        publish_fake_artifact(store, tiny_embed_model, ref.identity)
    assert list((tmp_path / "elsewhere").iterdir()) == []


def test_an_artifact_published_without_validation_is_served_only_when_the_operator_allows_it(tmp_path,
                                                                                           tiny_embed_model,
                                                                                           monkeypatch):
    store = ArtifactStore(tmp_path / "artifacts")
    manifest = publish_fake_artifact(store, tiny_embed_model, model_ref(str(tiny_embed_model)).identity)
    unvalidated = manifest.model_copy(update={"validation": None, "validation_note": "not validated: no card"})
    (store.folder(manifest.key) / "manifest.json").write_text(unvalidated.model_dump_json())
    spec = EngineSpec(model=str(tiny_embed_model), backend="onnx", dtype="fp32", seqlens=(64,))
    with pytest.raises(ModelLoadError, match="published without validation .*QWEN3B_ALLOW_UNVALIDATED_ARTIFACTS=1"):
        find_artifacts(spec, store)
    monkeypatch.setenv("QWEN3B_ALLOW_UNVALIDATED_ARTIFACTS", "1")
    assert find_artifacts(spec, store)[0][0].validation is None
