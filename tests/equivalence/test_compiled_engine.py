"""torch.compile (workers start --torch-compile inductor) changes the cost, not the result: the
compiled tiny engine agrees with the eager one at fp32 (cosine >= 0.99999, the bound of every fp32 fast path) on texts of many lengths, for both tasks,
and the option is refused where it cannot apply."""

import numpy as np
import pytest

from common.errors import ConfigError
from workers.engines.base import EngineSpec

TEXTS = ["a", "two words", "The quick brown fox jumps over the lazy dog. " * 3,
         "Short again.", "A longer passage that spans several tokens, " * 9, "x y z"]
PAIRS = [("what is a fox?", "The quick brown fox jumps over the lazy dog."), ("capital of France", "Paris " * 30)]


def test_the_compiled_embedding_engine_agrees_with_the_eager_one(tiny_engine):
    eager = tiny_engine("embed", dtype="fp32", seqlens=(16, 32, 64, 128))
    compiled = tiny_engine("embed", dtype="fp32", seqlens=(16, 32, 64, 128), torch_compile="inductor")
    assert compiled.run_net is not compiled.net  # really compiled, not the eager module again
    a, b = eager.embed(TEXTS), compiled.embed(TEXTS)
    cosines = (a.vectors * b.vectors).sum(axis=1)
    assert cosines.min() >= 0.99999, cosines
    assert (a.n_tokens == b.n_tokens).all()


def test_the_compiled_reranker_agrees_with_the_eager_one(tiny_engine):
    eager = tiny_engine("rerank", dtype="fp32", seqlens=(64, 128))
    compiled = tiny_engine("rerank", dtype="fp32", seqlens=(64, 128), torch_compile="inductor")
    q, d = zip(*PAIRS)
    a, b = eager.rerank(list(q), list(d)), compiled.rerank(list(q), list(d))
    assert np.allclose(a.scores, b.scores, atol=1e-4), (a.scores, b.scores)


@pytest.mark.parametrize("fields, words", [
    ({"torch_compile": "fast"}, "choose one of off, inductor, cudagraphs"),
    ({"torch_compile": "inductor", "backend": "onnx", "dtype": "fp32"}, "only the torch backend"),
    ({"torch_compile": "cudagraphs", "device": "cpu"}, "needs a CUDA device"),
])
def test_a_compile_mode_that_cannot_apply_is_refused_by_name(fields, words):
    with pytest.raises(ConfigError, match=words):
        EngineSpec(model="m", **fields)


def test_the_compiled_bf16_engine_stays_within_the_bf16_bound_of_fp32(tiny_engine, mixed_texts):
    """The bf16 bound of test_half_precision_agrees_with_fp32 holds for the compiled engine too."""
    from tests.equivalence.test_half_precision_agrees_with_fp32 import EMBED_SEQLENS, MIN_COSINE

    fp32 = tiny_engine("embed", dtype="fp32", seqlens=EMBED_SEQLENS).embed(mixed_texts).vectors
    out = tiny_engine("embed", dtype="bf16", seqlens=EMBED_SEQLENS, torch_compile="inductor").embed(mixed_texts)
    assert out.errors == [None] * len(mixed_texts)
    assert (out.vectors.astype(np.float64) * fp32).sum(1).min() >= MIN_COSINE
