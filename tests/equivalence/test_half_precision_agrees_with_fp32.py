"""bf16 (the native dtype) and fp16 agree with fp32 closely enough to serve.

The worst figures are printed (visible with -s) and attached to the test report as properties
(record_property: in --junitxml output), so a drift shows up before it fails.
"""

import numpy as np
import pytest

EMBED_SEQLENS = (16, 32, 64, 128)
RERANK_SEQLENS = (96, 128, 256)
MIN_COSINE = 0.99
MAX_SCORE_DIFF = 0.05

QUERIES = ["What is the capital of China?", "Explain gravity", "中国的首都是哪里？"]


@pytest.fixture(scope="module")
def fp32_vectors(tiny_engine, mixed_texts):
    return tiny_engine("embed", dtype="fp32", seqlens=EMBED_SEQLENS).embed(mixed_texts).vectors


@pytest.fixture(scope="module")
def pairs(mixed_texts):
    return [(QUERIES[i % len(QUERIES)], d) for i, d in enumerate(mixed_texts)]


@pytest.fixture(scope="module")
def fp32_scores(tiny_engine, pairs):
    return tiny_engine("rerank", dtype="fp32", seqlens=RERANK_SEQLENS).rerank(*zip(*pairs)).scores


@pytest.mark.parametrize("padding_side", ["left", "right"])
@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_half_precision_embeddings_agree_with_fp32(tiny_engine, mixed_texts, fp32_vectors, record_property, dtype,
                                                   padding_side):
    engine = tiny_engine("embed", dtype=dtype, seqlens=EMBED_SEQLENS, padding_side=padding_side)
    out = engine.embed(mixed_texts)
    assert out.errors == [None] * len(mixed_texts), "no NaN/inf expected on these inputs"
    cos = (out.vectors.astype(np.float64) * fp32_vectors).sum(1)
    worst = float(cos.min())
    record_property(f"worst_cosine_{dtype}_{padding_side}", worst)
    print(f"\n[agreement] embed {dtype} ({padding_side} padding) vs fp32: worst cosine {worst:.6f}, "
          f"mean {cos.mean():.6f} over {len(cos)} texts")
    assert worst >= MIN_COSINE, f"{dtype} row {int(cos.argmin())} has cosine {worst:.5f} to fp32"


@pytest.mark.parametrize("padding_side", ["left", "right"])
@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_half_precision_rerank_scores_agree_with_fp32(tiny_engine, pairs, fp32_scores, record_property, dtype,
                                                      padding_side):
    engine = tiny_engine("rerank", dtype=dtype, seqlens=RERANK_SEQLENS, padding_side=padding_side)
    out = engine.rerank(*zip(*pairs))
    assert out.errors == [None] * len(pairs)
    diff = np.abs(out.scores.astype(np.float64) - fp32_scores)
    worst = float(diff.max())
    record_property(f"worst_score_diff_{dtype}_{padding_side}", worst)
    print(f"\n[agreement] rerank {dtype} ({padding_side} padding) vs fp32: worst |P(yes) diff| {worst:.6f}, "
          f"mean {diff.mean():.6f} over {len(diff)} pairs")
    assert worst <= MAX_SCORE_DIFF, f"{dtype} pair {int(diff.argmax())} differs by {worst:.4f} from fp32"


def test_half_precision_engines_really_run_in_half_precision(tiny_engine):
    import torch

    assert tiny_engine("embed", dtype="bf16", seqlens=EMBED_SEQLENS).dtype == torch.bfloat16
    assert tiny_engine("embed", dtype="fp16", seqlens=EMBED_SEQLENS).dtype == torch.float16
    assert tiny_engine("rerank", dtype="bf16", seqlens=RERANK_SEQLENS).dtype == torch.bfloat16
    assert tiny_engine("embed", dtype="fp32", seqlens=EMBED_SEQLENS).dtype == torch.float32


def test_a_fully_padded_row_does_not_turn_into_nan_in_half_precision():
    """The left-padding mask uses the dtype's finite minimum, not -inf (qwen3.md, Numerics)."""
    import torch

    from workers.engines.torch_engine import left_padding_inputs

    for dtype in (torch.float16, torch.bfloat16):
        mask, positions = left_padding_inputs(torch.tensor([1, 4]), 4, dtype)
        assert torch.isfinite(mask).all()
        assert mask.shape == (2, 1, 4, 4)
        assert positions.tolist() == [[0, 0, 0, 0], [0, 1, 2, 3]]
        # row 0: padded query positions see nothing real; the last one sees only itself
        scores = torch.softmax(torch.zeros(4, 4, dtype=dtype) + mask[0, 0], dim=-1)
        assert torch.isfinite(scores).all()
        assert scores[3].tolist() == [0, 0, 0, 1]
