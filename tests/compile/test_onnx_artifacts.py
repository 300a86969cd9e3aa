"""ONNX artifacts: compiled through the queue, validated before publishing, equal to the torch
engine in fp32 and within reported bounds in fp16 and int8."""

import json

import numpy as np
import pytest

from common import defaults
from common.artifacts import ArtifactStore
from common.model_identity import model_ref
from tests.compile.conftest import BATCH, QUEUE_SEQLENS, sts_sentences
from workers.compile import samples
from workers.engines.base import EngineSpec
from workers.eval.metrics import measure_cosines


def test_a_compile_job_through_the_queue_publishes_one_validated_artifact_per_length(queued_compile, tiny_embed_model):
    done, root, worker_log = queued_compile
    assert done.returncode == 0, done.stdout + done.stderr + worker_log[-3000:]
    found = ArtifactStore(root).find(model_ref(str(tiny_embed_model)), "onnx", "embed", "fp32")
    assert [m.key.seqlen for m in found] == list(QUEUE_SEQLENS)
    for manifest in found:
        assert manifest.key.batch == BATCH
        assert manifest.validation.passed and manifest.validation.worst >= 0.99999
        assert manifest.validation.samples >= 10
        assert {"torch", "onnx", "onnxruntime"} <= set(manifest.tool_versions)
        folder = ArtifactStore(root).folder(manifest.key)
        assert (folder / manifest.files[0]).is_file() and manifest.inputs == ("input_ids", "attention_mask")
    assert "published" in done.stdout + done.stderr


def test_onnx_fp32_vectors_equal_the_torch_engine_on_real_sentences(queued_compile, tiny_embed_model, tiny_engine,
                                                                     monkeypatch):
    from workers.engines.onnx_engine import OnnxEngine

    monkeypatch.setenv("QWEN3B_ARTIFACT_STORE", str(queued_compile[1]))
    texts = sts_sentences(40) + [samples.LONG]
    onnx = OnnxEngine(EngineSpec(model=str(tiny_embed_model), backend="onnx", dtype="fp32", seqlens=QUEUE_SEQLENS))
    torch = tiny_engine("embed", dtype="fp32", seqlens=QUEUE_SEQLENS)
    ours, ref = onnx.embed(texts), torch.embed(texts)
    assert onnx.spec.seqlens == QUEUE_SEQLENS and ours.truncated[-1] and ref.truncated[-1]
    assert measure_cosines(ours.vectors, ref.vectors).min() >= 0.99999
    mrl = measure_cosines(onnx.embed(texts, dim=32).vectors, torch.embed(texts, dim=32).vectors)
    assert mrl.min() >= 0.99999


@pytest.mark.parametrize("dtype", ["fp16", "int8"])
def test_fp16_and_int8_embedding_agreement_is_recorded_and_within_its_bound(local_artifacts, tiny_embed_model, dtype):
    result = local_artifacts("embed", dtype)
    assert result["state"] == "published", result
    v = result["validation"]
    assert v["metric"] == "worst_cosine" and v["bound"] == defaults.ARTIFACT_MIN_COSINE[dtype]
    assert v["bound"] <= v["worst"] < 1.000001
    manifests = local_artifacts.store.find(model_ref(str(tiny_embed_model)), "onnx", "embed", dtype)
    # how the weights were quantised travels with the artifact (7-bit: no saturation on AVX2-only CPUs)
    assert [m.tool_versions.get("int8_weights") for m in manifests] == [
        "dynamic MatMul, per-channel qint8, reduce_range" if dtype == "int8" else None]
    print(f"\n{dtype}: worst cosine {v['worst']:.6f}, mean {v['mean']:.6f} vs torch fp32 over {v['samples']} texts")


@pytest.mark.parametrize("dtype", ["fp32"])  # int8 reranker agreement: the engine benchmark reports it
def test_reranker_artifacts_score_like_the_torch_engine(local_artifacts, tiny_rerank_model, tiny_engine, dtype,
                                                       monkeypatch):
    from workers.engines.onnx_engine import OnnxEngine

    result = local_artifacts("rerank", dtype)
    assert result["state"] == "published", result
    monkeypatch.setenv("QWEN3B_ARTIFACT_STORE", str(local_artifacts.store.root))
    onnx = OnnxEngine(EngineSpec(model=str(tiny_rerank_model), task="rerank", backend="onnx", dtype=dtype,
                                 seqlens=(128,)))
    torch = tiny_engine("rerank", dtype="fp32", seqlens=(128,))
    # short queries: instruction + query must fit the 128-token artifact (the standard library's
    # docstrings, used where STS12 is not beside the checkout, hold some long sentences)
    short = [s for s in sts_sentences(200) if len(s.split()) <= 30]
    queries, documents = short[:12], short[12:24]
    ours, reference = onnx.rerank(queries, documents), torch.rerank(queries, documents)
    # a non-finite score is flagged by its engine: say which engine and which row, not just "nan"
    assert ours.errors == [None] * len(queries), f"onnx: {ours.errors}"
    assert reference.errors == [None] * len(queries), f"torch: {reference.errors}"
    diff = np.abs(ours.scores - reference.scores)
    assert diff.max() <= defaults.ARTIFACT_MAX_SCORE_DIFF[dtype], (ours.scores, reference.scores)
    print(f"\nrerank {dtype}: worst |P(yes) diff| {diff.max():.2e}, mean {diff.mean():.2e}")


def test_an_artifact_that_fails_validation_is_not_published_and_the_job_says_why(tiny_embed_model, tmp_path,
                                                                                  monkeypatch):
    from tests.compile.conftest import request_for
    from workers.compile.job import run_compile

    monkeypatch.setitem(defaults.ARTIFACT_MIN_COSINE, "int8", 0.9999999)  # int8 cannot reach this
    store = ArtifactStore(tmp_path / "artifacts")
    request = request_for(tiny_embed_model, "embed", "int8", 64)
    states = []
    result = run_compile(request, store, lambda state, **f: states.append(state))
    assert result["state"] == "failed" and states == ["running", "failed"]
    assert "validation failed: worst_cosine" in result["reason"] and "Not published" in result["reason"]
    assert store.manifest(request.key) is None and not store.folder(request.key).exists()
    assert list((tmp_path / "artifacts" / ".staging").iterdir()) == []


def test_a_compiled_key_is_not_compiled_twice(local_artifacts):
    first = local_artifacts("embed", "fp16")
    from workers.compile.job import run_compile
    from tests.compile.conftest import request_for

    again = run_compile(request_for(first_model(local_artifacts, first), "embed", "fp16", 128), local_artifacts.store)
    assert again["state"] == "exists" and again["folder"] == first["folder"]


def first_model(local_artifacts, result) -> str:
    manifest = json.loads((local_artifacts.store.root / result["folder"] / "manifest.json").read_text())
    return manifest["model_source"]


def test_an_exporter_crash_ends_the_job_as_failed_with_the_error_and_publishes_nothing(tiny_embed_model, tmp_path,
                                                                                       monkeypatch):
    from tests.compile.conftest import request_for
    from workers.compile import onnx_export
    from workers.compile.job import run_compile

    def crash(*args, **kwargs):
        raise RuntimeError("exporter ran out of memory (simulated)")

    monkeypatch.setattr(onnx_export, "export", crash)
    store = ArtifactStore(tmp_path / "artifacts")
    request = request_for(tiny_embed_model, "embed", "fp32", 64)
    states = []
    result = run_compile(request, store, lambda state, **f: states.append(state))
    assert states == ["running", "failed"]
    assert result["reason"] == "RuntimeError: exporter ran out of memory (simulated)"
    assert store.manifest(request.key) is None and list((tmp_path / "artifacts" / ".staging").iterdir()) == []
