"""Post-processing shared by every backend: NaN/inf detection, MRL dimensions, option checks."""

import numpy as np
import pytest

from common.errors import ConfigError
from workers.engines.base import EngineSpec, normalize_mrl

SEQLENS = (16, 32, 64)
POISON_WORD = "poison"


def poison_token(tokenizer) -> int:
    [tid] = tokenizer(" " + POISON_WORD, add_special_tokens=False)["input_ids"][-1:]
    return tid


def batch_of(engine, position):
    [batch] = [b for b in engine.batches_seen if position in b.rows]
    return {int(r) for r in batch.rows}


# --- NaN / inf ------------------------------------------------------------------------------------

@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_a_non_finite_batch_marks_every_row_of_it_and_writes_no_vector(fake_engine, embed_tokenizer, value):
    """Given a model that returns NaN/inf for one whole batch, when embedding, then every row of
    that batch carries an error and a zero vector, and the rows of the other batches are fine."""
    engine = fake_engine("embed", seqlens=SEQLENS, batch_tokens=64, poison_token=poison_token(embed_tokenizer),
                         poison_value=value, poison_whole_batch=True)
    texts = ["a", "b c", f"d {POISON_WORD}", "e f g", "h"] + ["a much longer text " * 3 + str(i) for i in range(4)]
    out = engine.embed(texts)

    bad = batch_of(engine, 2)
    assert len(bad) > 1 and len(bad) < len(texts)
    for i in range(len(texts)):
        if i in bad:
            assert out.errors[i] is not None and out.errors[i].startswith("non_finite_output")
            assert "fp32" in out.errors[i] and "bf16" in out.errors[i]
            assert not out.vectors[i].any()
        else:
            assert out.errors[i] is None
            assert np.linalg.norm(out.vectors[i]) == pytest.approx(1.0, abs=1e-6)
    assert np.isfinite(out.vectors).all()


def test_one_non_finite_row_poisons_its_whole_batch_and_no_vector_of_it_is_written(fake_engine, embed_tokenizer):
    """Given a model that returns NaN for ONE row, when embedding, then every row of its batch is
    reported, and (as EmbedOutput promises: zeros where errors[i] is set) none of them keeps a vector."""
    engine = fake_engine("embed", seqlens=SEQLENS, batch_tokens=64, poison_token=poison_token(embed_tokenizer))
    texts = ["a", "b c", f"d {POISON_WORD}", "e f g", "h"]
    out = engine.embed(texts)

    bad = batch_of(engine, 2)
    assert len(bad) > 1
    for i in bad:
        assert out.errors[i] is not None and out.errors[i].startswith("non_finite_output")
        assert not out.vectors[i].any(), f"row {i} has an error but a vector was written"


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_a_non_finite_rerank_batch_marks_every_row_of_it_and_writes_no_score(fake_engine, rerank_tokenizer, value):
    engine = fake_engine("rerank", seqlens=(96, 128), batch_tokens=256, poison_token=poison_token(rerank_tokenizer),
                         poison_value=value, poison_whole_batch=True)
    documents = ["one", "two", f"three {POISON_WORD}", "four", "five " * 20, "six " * 20]
    out = engine.rerank(["q"] * len(documents), documents)

    bad = batch_of(engine, 2)
    assert 1 < len(bad) < len(documents)
    for i in range(len(documents)):
        if i in bad:
            assert out.errors[i].startswith("non_finite_output") and np.isnan(out.scores[i])
        else:
            assert out.errors[i] is None and 0.0 < out.scores[i] < 1.0


def test_one_non_finite_rerank_row_poisons_its_whole_batch_and_no_score_of_it_is_written(fake_engine,
                                                                                       rerank_tokenizer):
    """RerankOutput promises NaN where errors[i] is set."""
    engine = fake_engine("rerank", seqlens=(96, 128), batch_tokens=256, poison_token=poison_token(rerank_tokenizer))
    documents = ["one", "two", f"three {POISON_WORD}", "four"]
    out = engine.rerank(["q"] * len(documents), documents)

    bad = batch_of(engine, 2)
    assert len(bad) > 1
    for i in bad:
        assert out.errors[i].startswith("non_finite_output")
        assert np.isnan(out.scores[i]), f"row {i} has an error but a score was written"


# base.py's 1 / (1 + exp(-gap)) is right but warns on overflow for gaps below about -88 (see the report)
@pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning")
@pytest.mark.parametrize("gap,score", [(1000.0, 1.0), (-1000.0, 0.0), (80.0, 1.0), (-80.0, 0.0)])
def test_a_huge_but_finite_logit_gap_is_a_certain_score_not_an_error(fake_engine, rerank_tokenizer, gap, score):
    engine = fake_engine("rerank", seqlens=(128,), poison_token=poison_token(rerank_tokenizer), poison_value=gap)
    out = engine.rerank(["q", "q"], [f"d {POISON_WORD}", "other"])
    assert out.errors == [None, None]
    assert out.scores[0] == pytest.approx(score, abs=1e-6)
    assert 0.0 < out.scores[1] < 1.0


def test_normalisation_is_over_the_hidden_axis_never_the_batch_axis():
    """The vendor demo normalised over the batch axis: with one row every component became +-1."""
    pooled = np.array([[3.0, 4.0, 0.0, 0.0]], dtype=np.float32)
    vectors, bad = normalize_mrl(pooled, 4)
    np.testing.assert_allclose(vectors, [[0.6, 0.8, 0.0, 0.0]], atol=1e-7)
    assert not bad.any()
    vectors, bad = normalize_mrl(np.array([[1.0, 0.0], [0.0, 0.0]], dtype=np.float32), 2)
    assert bad.tolist() == [False, True] and not vectors[1].any()


# --- MRL dimensions, on the tiny model -----------------------------------------------------------

TEXTS = ["hello world", "", "北京是中国的首都", "a longer sentence with a few more words in it 🎉"]


@pytest.fixture(scope="module")
def engine(tiny_engine):
    return tiny_engine("embed", dtype="fp32", seqlens=SEQLENS)


@pytest.mark.parametrize("dim", [32, 48, None, "hidden"])
def test_an_mrl_dimension_is_the_full_vector_sliced_then_renormalised(engine, dim):
    hidden = engine.info.hidden_size
    dim = hidden if dim == "hidden" else dim
    full = engine.embed(TEXTS).vectors
    out = engine.embed(TEXTS, dim=dim)
    want = full[:, :dim or hidden]
    want = want / np.linalg.norm(want, axis=1, keepdims=True)
    assert out.vectors.shape == (len(TEXTS), dim or hidden)
    np.testing.assert_allclose(np.linalg.norm(out.vectors, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(out.vectors, want, atol=1e-6)
    if dim and dim < hidden:
        assert np.abs(out.vectors - full[:, :dim]).max() > 1e-3, "a smaller dim must be renormalised"


@pytest.mark.parametrize("dim", [31, 0, -1, "hidden+1"])
def test_an_mrl_dimension_outside_32_to_hidden_is_refused_clearly(engine, dim):
    hidden = engine.info.hidden_size
    dim = hidden + 1 if dim == "hidden+1" else dim
    with pytest.raises(ConfigError, match=rf"--dim {dim}.*(from 32|above the model's hidden size {hidden})"):
        engine.embed(["x"], dim=dim)


# --- options -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("field,value,message", [
    ("task", "classify", "--task 'classify': choose embed or rerank"),
    ("dtype", "fp8", "--dtype 'fp8': choose one of fp32, bf16, fp16, int8"),
    ("padding_side", "middle", "padding_side must be 'left' or 'right'"),
    ("seqlens", (4,), "--seqlens: lengths must be >= 8"),
])
def test_a_bad_engine_option_is_refused_with_a_clear_message(field, value, message):
    with pytest.raises(ConfigError, match=message):
        EngineSpec(model="m", **{field: value})


def test_an_unknown_backend_names_the_available_ones():
    from workers.engines.registry import create_engine

    with pytest.raises(ConfigError, match=r"unknown backend 'nope'; available: .*\btorch\b"):
        create_engine(EngineSpec(model="m", backend="nope"))
