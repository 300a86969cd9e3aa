"""Fixed-shape benchmark requests: exactly batch x seqlen real tokens, shaped like real inputs."""

import numpy as np
import pytest

from workers.bench.errors import BenchError
from workers.bench.inputs import fixed_shape_batch, run_request


def test_an_embedding_request_is_full_rows_ending_in_endoftext(tiny_engine):
    engine = tiny_engine("embed", dtype="fp32")
    batch = fixed_shape_batch(engine, 3, 16, seed=1)
    assert batch.input_ids.shape == (3, 16)
    assert batch.lengths.tolist() == [16, 16, 16]  # no padding: real tokens = batch x seqlen
    assert (batch.input_ids[:, -1] == engine.endoftext_id).all()
    assert (batch.input_ids[:, :-1] < engine.endoftext_id).all()  # ordinary tokens only
    assert run_request(engine, batch).shape == (3, engine.info.hidden_size)


def test_a_rerank_request_keeps_the_whole_prompt_around_its_filler(tiny_engine):
    engine = tiny_engine("rerank", dtype="fp32")
    prompt = engine.rerank_prompt_ids()
    batch = fixed_shape_batch(engine, 2, 80)
    assert batch.input_ids.shape == (2, 80)
    for row in batch.input_ids:
        assert row[:len(prompt.prefix)].tolist() == prompt.prefix
        assert row[-len(prompt.suffix):].tolist() == prompt.suffix
    assert np.isfinite(run_request(engine, batch)).all()


def test_a_rerank_length_shorter_than_its_prompt_is_refused_with_the_minimum(tiny_engine):
    engine = tiny_engine("rerank", dtype="fp32")
    fixed = len(engine.rerank_prompt_ids().prefix) + len(engine.rerank_prompt_ids().suffix)
    with pytest.raises(BenchError, match=f"at least {fixed + 1}"):
        fixed_shape_batch(engine, 1, fixed)


def test_the_same_seed_gives_the_same_request(tiny_engine):
    engine = tiny_engine("embed", dtype="fp32")
    first, again = fixed_shape_batch(engine, 2, 32, seed=5), fixed_shape_batch(engine, 2, 32, seed=5)
    assert (first.input_ids == again.input_ids).all()
    assert not (first.input_ids == fixed_shape_batch(engine, 2, 32, seed=6).input_ids).all()
