"""The torch engine's int8 (workers start --dtype int8 on a CPU: torchao's dynamic int8 linear
layers, compiled by inductor) stays close to the fp32 engine: worst cosine >= 0.99 on texts of every
length (the bound issue 15 set for int8), reranker P(yes) within the int8 bound the ONNX int8
artifacts are validated against (0.1; the tiny model's worst is about 0.03); it is refused by name where
it cannot run, and a machine without torchao is told what to install."""

import sys

import numpy as np
import pytest

from common.defaults import ARTIFACT_MAX_SCORE_DIFF
from common.errors import BackendUnavailableError, ConfigError
from workers.engines.base import EngineSpec

INT8_MIN_COSINE = 0.99
INT8_MAX_P_YES_DIFF = ARTIFACT_MAX_SCORE_DIFF["int8"]
EMBED_SEQLENS = (16, 32, 64, 128)
PAIRS = [("what is a fox?", "The quick brown fox jumps over the lazy dog."), ("capital of France", "Paris " * 30),
         ("北京", "北京是中华人民共和国的首都"), ("", "an empty query")]


def test_the_int8_embedding_engine_stays_within_the_int8_bound_of_fp32(tiny_engine, mixed_texts):
    fp32 = tiny_engine("embed", dtype="fp32", seqlens=EMBED_SEQLENS).embed(mixed_texts)
    int8 = tiny_engine("embed", dtype="int8", seqlens=EMBED_SEQLENS)
    assert int8.run_net is not int8.net  # int8 always runs compiled
    assert any("Int8" in type(m.weight).__name__ or "Quantized" in type(m.weight).__name__
               for m in int8.net.modules() if hasattr(m, "weight") and m.weight is not None), "nothing quantised"
    out = int8.embed(mixed_texts)
    assert out.errors == [None] * len(mixed_texts)
    assert (out.n_tokens == fp32.n_tokens).all()
    cosines = (out.vectors.astype(np.float64) * fp32.vectors).sum(1)
    assert cosines.min() >= INT8_MIN_COSINE, cosines
    assert cosines.min() < 0.99999, "int8 agreed like fp32: were the linear layers quantised at all?"


def test_the_int8_reranker_stays_close_to_the_fp32_one(tiny_engine):
    q, d = map(list, zip(*PAIRS))
    fp32 = tiny_engine("rerank", dtype="fp32", seqlens=(64, 128)).rerank(q, d).scores
    int8 = tiny_engine("rerank", dtype="int8", seqlens=(64, 128)).rerank(q, d).scores
    diff = np.abs(np.asarray(int8) - np.asarray(fp32))
    assert diff.max() <= INT8_MAX_P_YES_DIFF, (int8, fp32)
    assert diff.max() > 1e-5, "int8 agreed like fp32: were the linear layers quantised at all?"


@pytest.mark.parametrize("fields, words", [
    ({"device": "cuda:0"}, "runs on the CPU only, not cuda:0"),
    ({"backend": "simulated"}, "simulated has no int8; use --backend torch"),
    ({"backend": "vacc"}, "vacc artifacts are compiled in fp16"),
])
def test_int8_is_refused_by_name_where_it_cannot_run(fields, words):
    with pytest.raises(ConfigError, match=words):
        EngineSpec(model="m", dtype="int8", **fields)


def test_a_machine_without_torchao_is_told_what_to_install(monkeypatch):
    import torch

    from workers.engines.torch_engine import quantize_linear_int8

    monkeypatch.setitem(sys.modules, "torchao", None)  # an import of torchao now raises ImportError
    monkeypatch.setitem(sys.modules, "torchao.quantization", None)
    with pytest.raises(BackendUnavailableError, match=r"needs torchao.*qwen3-batch\[int8\].*--dtype bf16"):
        quantize_linear_int8(torch.nn.Sequential(torch.nn.Linear(4, 4)))
