"""The VACC backend against stand-ins for the vendor's compiler and runtime (no card exists
here): the vamc config written, the artifact registered, the runtime fed six int32 [1, seqlen]
tensors in the vendor's order, and pooling at the last real token (equal to the torch engine)."""

import json

import numpy as np
import pytest

from common.artifacts import ArtifactStore
from common.errors import BackendUnavailableError
from tests.compile.conftest import request_for, sts_sentences
from workers.compile.job import run_compile
from workers.engines.base import EngineSpec
from workers.eval.metrics import measure_cosines


@pytest.fixture
def vacc_store(tmp_path, monkeypatch):
    monkeypatch.setenv("QWEN3B_ARTIFACT_STORE", str(tmp_path / "artifacts"))
    return ArtifactStore(tmp_path / "artifacts")


def test_a_vacc_compile_writes_the_vendor_config_and_publishes_the_mod_files(fake_vendor_tools, vacc_store,
                                                                            tiny_embed_model):
    request = request_for(tiny_embed_model, "embed", "fp16", 64, backend="vacc", batch=2)
    result = run_compile(request, vacc_store, validate_device="vacc:0")
    assert result["state"] == "published", result
    call = json.loads(fake_vendor_tools.read_text().splitlines()[0])
    config = call["config"]
    assert call["argv"][0] == "compile"
    assert config["frontend"] == {"checkpoint": str(tiny_embed_model), "shape": {"input_ids": [[64], []]},
                                  "type": "huggingface", "model_kwargs": {"model_arch": "vacc"}, "dtype": "fp32"}
    assert config["backend"]["type"] == "tvm_vacc" and config["backend"]["dtype"] == "fp16"
    manifest = vacc_store.manifest(request.key)
    folder = vacc_store.folder(request.key)
    assert manifest.files[0] == "mod" and all((folder / f).is_file() for f in ("mod.json", "mod.params", "mod.so"))
    assert manifest.inputs == ("input_ids", "attention_mask", "token_type_ids", "attention_mask", "attention_mask",
                               "attention_mask")
    # validated through the (fake) runtime against the fp32 torch engine
    assert manifest.validation.passed and manifest.validation.worst >= 0.999


def test_the_vacc_engine_feeds_six_int32_tensors_in_vendor_order_and_pools_the_last_real_token(
        fake_vendor_tools, vacc_store, tiny_embed_model, tiny_engine):
    import vaststreamx

    from workers.engines.vacc_engine import VaccEngine

    assert run_compile(request_for(tiny_embed_model, "embed", "fp16", 64, backend="vacc", batch=3),
                       vacc_store)["state"] == "published"
    vaststreamx.CALLS.clear()
    engine = VaccEngine(EngineSpec(model=str(tiny_embed_model), backend="vacc", dtype="fp16", device="vacc:1",
                                   seqlens=(64,)))
    texts = sts_sentences(5)  # 10 texts of different lengths: 3 calls of 3 rows, the last padded
    got = engine.embed(texts).vectors
    assert ("set_device", 1) in vaststreamx.CALLS
    assert any(c[0] == "Model" and c[1].endswith("/mod") and c[2] == 3 for c in vaststreamx.CALLS)
    samples = [c for c in vaststreamx.CALLS if c[0] == "sample"]
    assert len(samples) == 12  # 4 compiled calls of 3 samples
    for _, shapes, arrays in samples:
        assert shapes == [("int32", (1, 64), 1)] * 6
        mask, token_types = arrays[1], arrays[2]
        assert not token_types.any() and all((a == mask).all() for a in arrays[3:])
        n = int(mask.sum())
        assert mask[0, :n].all() and not mask[0, n:].any()  # right padding
    first_ids = samples[0][2][0][0]
    assert first_ids[int(samples[0][2][1].sum()) - 1] == engine.endoftext_id  # the last real token
    want = tiny_engine("embed", dtype="fp32", seqlens=(64,)).embed(texts).vectors
    assert measure_cosines(got, want).min() >= 0.999  # the stand-in returns fp16 like the card


def test_the_vacc_reranker_reads_yes_minus_no_at_the_last_real_token(fake_vendor_tools, vacc_store,
                                                                    tiny_rerank_model, tiny_engine):
    from workers.engines.vacc_engine import VaccEngine

    assert run_compile(request_for(tiny_rerank_model, "rerank", "fp16", 128, backend="vacc", batch=2),
                       vacc_store)["state"] == "published"
    engine = VaccEngine(EngineSpec(model=str(tiny_rerank_model), task="rerank", backend="vacc", dtype="fp16",
                                   device="vacc:0", seqlens=(128,)))
    queries, documents = sts_sentences(4)[:4], sts_sentences(4)[4:]
    got = engine.rerank(queries, documents).scores
    want = tiny_engine("rerank", dtype="fp32", seqlens=(128,)).rerank(queries, documents).scores
    assert np.abs(got - want).max() <= 0.01


def test_a_vamc_failure_publishes_nothing_and_shows_the_compiler_log(fake_vendor_tools, vacc_store,
                                                                     tiny_embed_model, monkeypatch):
    monkeypatch.setenv("FAKE_VAMC_FAIL", "1")
    request = request_for(tiny_embed_model, "embed", "fp16", 64, backend="vacc")
    result = run_compile(request, vacc_store)
    assert result["state"] == "failed"
    assert "vamc compile" in result["reason"] and "TVM lowering failed (fake)" in result["reason"]
    assert vacc_store.manifest(request.key) is None


def test_without_the_vendor_tools_the_vacc_backend_says_what_is_missing(tiny_embed_model, vacc_store, monkeypatch):
    from workers.compile.vacc import find_vamc
    from workers.engines import vacc_engine

    monkeypatch.setenv("QWEN3B_VAMC", "vamc-not-installed-here")
    with pytest.raises(BackendUnavailableError, match="VACC compiler .* is not installed"):
        find_vamc()
    monkeypatch.setattr(vacc_engine, "VSX_MODULE", "vaststreamx_absent_module")
    with pytest.raises(BackendUnavailableError, match="VastAI runtime SDK .* not installed"):
        vacc_engine.import_vaststreamx()
    result = run_compile(request_for(tiny_embed_model, "embed", "fp16", 64, backend="vacc"), vacc_store)
    assert result["state"] == "failed" and "not installed" in result["reason"]
