"""Tokenise, cap, truncate, bucket, pad, restore order: the engine's shared pre-processing.

The engine-level tests run a fake engine whose outputs encode each row's own token ids, and
compare against ids made independently with the tokenizer's own truncation (the way
sentence-transformers and the model card build them), so a row mix-up or a wrong cut fails.
"""

import random

import numpy as np
import pytest

from common.errors import ConfigError
from common.defaults import DEFAULT_RERANK_INSTRUCTION
from common.templates import RERANK_PREFIX, RERANK_SUFFIX
from harness.model_card import ModelCardReranker
from common.options import validate_seqlens
from workers import batching

ENDOFTEXT_ID = 151643
WORDS = ("alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma tau "
         "upsilon phi chi psi omega 北京 上海 🎉 12 345 !? the of and").split()


def mixed_texts(n=40, max_words=80, seed=7) -> list[str]:
    """Texts of very different lengths, in no particular order, all distinct."""
    rng = random.Random(seed)
    texts = [f"text {i}: " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(0, max_words)))
             for i in range(n)]
    texts += ["", " ", "x", "a text far longer than the largest bucket " * 40]
    rng.shuffle(texts)
    return texts


def expected_embedding_ids(tokenizer, text, max_tokens):
    """The tokenizer's own truncation, which keeps its post-processor's <|endoftext|> last."""
    return tokenizer(text, truncation=True, max_length=max_tokens)["input_ids"]


def expected_rerank_ids(tokenizer, query, document, max_tokens, instruction=None):
    """The model card's recipe: prefix and suffix apart, the body truncated to what is left."""
    prefix = tokenizer(RERANK_PREFIX, add_special_tokens=False)["input_ids"]
    suffix = tokenizer(RERANK_SUFFIX, add_special_tokens=False)["input_ids"]
    body = ModelCardReranker.format_instruction(instruction or DEFAULT_RERANK_INSTRUCTION, query, document)
    ids = tokenizer(body, add_special_tokens=False, truncation="longest_first",
                    max_length=max_tokens - len(prefix) - len(suffix))["input_ids"]
    return prefix + ids + suffix


# --- pure functions ---------------------------------------------------------------------------------

def test_sequence_lengths_are_sorted_and_deduplicated():
    assert validate_seqlens([512, 64, 128, 64]) == (64, 128, 512)


@pytest.mark.parametrize("bad", [[], [4], [0, 64]])
def test_sequence_lengths_below_eight_tokens_are_refused(bad):
    with pytest.raises(ConfigError, match="--seqlens: lengths must be >= 8"):
        validate_seqlens(bad)


def test_compiled_shapes_refuse_lengths_that_are_not_multiples_of_16():
    assert validate_seqlens([32, 64], multiple=16) == (32, 64)
    with pytest.raises(ConfigError, match=r"\[40\].*multiples of 16"):
        validate_seqlens([32, 40], multiple=16)


def test_a_row_goes_to_the_smallest_bucket_that_holds_it():
    seqlens = (16, 32, 64)
    assert [batching.bucket_for(n, seqlens) for n in (1, 16, 17, 32, 33, 64)] == [16, 16, 32, 32, 64, 64]
    with pytest.raises(ConfigError, match="65 tokens exceeds the largest sequence length 64"):
        batching.bucket_for(65, seqlens)


@pytest.mark.parametrize("pad_to_bucket", [True, False])
@pytest.mark.parametrize("batch_tokens,max_rows", [(256, 256), (100, 3), (16, 256), (4096, 7)])
def test_batches_cover_every_row_once_inside_one_bucket_and_under_the_token_budget(pad_to_bucket, batch_tokens,
                                                                                    max_rows):
    rng = np.random.default_rng(0)
    seqlens = (16, 32, 64, 128)
    lengths = rng.integers(1, 129, size=300)
    plans = batching.plan_batches(lengths, seqlens, batch_tokens, max_rows, pad_to_bucket)

    seen = np.concatenate([rows for rows, _ in plans])
    assert sorted(seen.tolist()) == list(range(len(lengths)))
    # sorted by length, ties in input order (stable)
    assert seen.tolist() == sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    for rows, padded in plans:
        buckets = {batching.bucket_for(int(n), seqlens) for n in lengths[rows]}
        assert len(buckets) == 1, "a batch mixes buckets"
        bucket = buckets.pop()
        longest = int(lengths[rows].max())
        if pad_to_bucket:
            assert padded == bucket
        else:
            assert padded == min(bucket, -(-longest // 16) * 16)
        assert longest <= padded <= bucket
        assert len(rows) <= max_rows
        assert len(rows) * bucket <= max(batch_tokens, bucket), "batch over the padded-token budget"


def test_padding_puts_ids_at_the_right_or_left_end():
    ids = [[1, 2, 3], [4], [5, 6]]
    rows = np.array([2, 0, 1])
    right = batching.pad_rows(ids, rows, 4, 9, "right")
    left = batching.pad_rows(ids, rows, 4, 9, "left")
    assert right.input_ids.tolist() == [[5, 6, 9, 9], [1, 2, 3, 9], [4, 9, 9, 9]]
    assert left.input_ids.tolist() == [[9, 9, 5, 6], [9, 1, 2, 3], [9, 9, 9, 4]]
    assert right.lengths.tolist() == left.lengths.tolist() == [2, 3, 1]
    assert right.input_ids.dtype == np.int64 and right.seqlen == 4


def test_an_embedding_row_is_cut_to_max_tokens_and_still_ends_with_endoftext(embed_tokenizer):
    text = "one two three four five six seven eight nine ten eleven twelve"
    [row] = batching.tokenize_for_embedding(embed_tokenizer, [text], 8, ENDOFTEXT_ID, 10_000)
    assert row.truncated and len(row.ids) == 8 and row.ids[-1] == ENDOFTEXT_ID
    assert row.ids == expected_embedding_ids(embed_tokenizer, text, 8)


def test_a_row_that_fits_exactly_is_not_flagged_truncated(embed_tokenizer):
    text = "one two three four five six seven"  # 7 tokens + <|endoftext|>
    assert len(embed_tokenizer(text)["input_ids"]) == 8
    [row] = batching.tokenize_for_embedding(embed_tokenizer, [text], 8, ENDOFTEXT_ID, 10_000)
    assert not row.truncated and row.ids == embed_tokenizer(text)["input_ids"]


def test_the_character_cap_flags_truncation_even_when_the_tokens_fit(embed_tokenizer):
    """Given a text longer than the character cap, when it is tokenised, then only the capped
    characters are tokenised and the row says it was truncated."""
    text = "abc " * 30  # 120 characters, 31 tokens
    [row] = batching.tokenize_for_embedding(embed_tokenizer, [text], 64, ENDOFTEXT_ID, max_chars=40)
    assert row.truncated
    assert row.ids == embed_tokenizer(text[:40])["input_ids"]


def test_the_reranker_cuts_the_document_end_and_keeps_prefix_instruction_query_and_suffix(rerank_tokenizer):
    tok = rerank_tokenizer
    prompt = batching.RerankPromptIds(tok(RERANK_PREFIX, add_special_tokens=False)["input_ids"],
                                      tok(RERANK_SUFFIX, add_special_tokens=False)["input_ids"])
    query, document = "who wrote it?", "word " * 500
    rows = batching.tokenize_for_rerank(tok, prompt, [query, query], [document, "short"], "my instruction",
                                        max_tokens=96, max_chars=96 * 32)
    long_row, short_row = rows
    assert long_row.truncated and len(long_row.ids) == 96 and long_row.error is None
    assert long_row.ids == expected_rerank_ids(tok, query, document, 96, "my instruction")
    assert long_row.ids[:len(prompt.prefix)] == prompt.prefix
    assert long_row.ids[-len(prompt.suffix):] == prompt.suffix
    assert "<Query>: who wrote it?\n<Document>: word word" in tok.decode(long_row.ids)
    assert not short_row.truncated
    assert short_row.ids == prompt.prefix + tok(ModelCardReranker.format_instruction("my instruction", query, "short"),
                                                 add_special_tokens=False)["input_ids"] + prompt.suffix


def test_a_query_that_leaves_no_room_for_the_document_gets_an_error_row(rerank_tokenizer):
    tok = rerank_tokenizer
    prompt = batching.RerankPromptIds(tok(RERANK_PREFIX, add_special_tokens=False)["input_ids"],
                                      tok(RERANK_SUFFIX, add_special_tokens=False)["input_ids"])
    rows = batching.tokenize_for_rerank(tok, prompt, ["long query " * 40, "ok"], ["doc", "doc"], "inst",
                                        max_tokens=96, max_chars=96 * 32)
    assert rows[0].ids == [] and rows[0].error.startswith("query_too_long")
    assert "96-token limit" in rows[0].error
    assert rows[1].error is None and not rows[1].truncated


def test_rerank_needs_one_query_per_document(rerank_tokenizer):
    prompt = batching.RerankPromptIds([1], [2])
    with pytest.raises(ConfigError, match="2 queries, 1 documents"):
        batching.tokenize_for_rerank(rerank_tokenizer, prompt, ["a", "b"], ["d"], "i", 64, 1000)


# --- the engine's batching loop, with a fake model -----------------------------------------------

SEQLENS = (16, 32, 64, 128)


@pytest.mark.parametrize("padding_side", ["left", "right"])
@pytest.mark.parametrize("pad_to_bucket", [True, False])
def test_embeddings_come_back_in_the_callers_order_after_sorting_by_length(fake_engine, fake_vector_of,
                                                                         embed_tokenizer, padding_side,
                                                                         pad_to_bucket):
    """Given texts of mixed lengths in no order, when the engine sorts them into buckets and
    batches, then row i of the output is the embedding of text i."""
    texts = mixed_texts()
    engine = fake_engine("embed", seqlens=SEQLENS, batch_tokens=128, max_batch_rows=5,
                         padding_side=padding_side, pad_to_bucket=pad_to_bucket)
    out = engine.embed(texts)

    assert len(engine.batches_seen) > 8, "the test must exercise many batches"
    assert out.vectors.shape == (len(texts), 256) and out.vectors.dtype == np.float32
    for i, text in enumerate(texts):
        ids = expected_embedding_ids(embed_tokenizer, text, SEQLENS[-1])
        assert engine.rows_seen[i] == ids, f"row {i} was fed another row's ids"
        np.testing.assert_allclose(out.vectors[i], fake_vector_of(ids), atol=1e-6, err_msg=f"row {i}")
        assert out.n_tokens[i] == len(ids)
        assert out.truncated[i] == (len(embed_tokenizer(text)["input_ids"]) > SEQLENS[-1])
    assert out.errors == [None] * len(texts)
    assert out.truncated.any() and not out.truncated.all()


def test_every_batch_has_exactly_a_bucket_shape_when_padding_to_buckets(fake_engine):
    engine = fake_engine("embed", seqlens=SEQLENS, batch_tokens=256, pad_to_bucket=True)
    engine.embed(mixed_texts())
    shapes = {b.input_ids.shape for b in engine.batches_seen}
    assert {s[1] for s in shapes} == set(SEQLENS), shapes
    for b in engine.batches_seen:
        assert b.seqlen in SEQLENS
        assert b.lengths.max() <= b.seqlen
        assert b.seqlen == min(s for s in SEQLENS if s >= b.lengths.max()), "row not in its smallest bucket"


def test_dynamic_batches_are_padded_to_their_longest_row_rounded_to_16(fake_engine):
    engine = fake_engine("embed", seqlens=SEQLENS, batch_tokens=256, pad_to_bucket=False)
    engine.embed(mixed_texts())
    for b in engine.batches_seen:
        assert b.seqlen % 16 == 0 and b.seqlen - 16 < b.lengths.max() <= b.seqlen


@pytest.mark.parametrize("batch_tokens,max_rows", [(128, 256), (512, 3)])
def test_each_batch_stays_under_the_padded_token_budget_and_row_cap(fake_engine, batch_tokens, max_rows):
    engine = fake_engine("embed", seqlens=SEQLENS, batch_tokens=batch_tokens, max_batch_rows=max_rows,
                         pad_to_bucket=True)
    texts = mixed_texts(n=60)
    engine.embed(texts)
    assert sum(len(b.rows) for b in engine.batches_seen) == len(texts)
    for b in engine.batches_seen:
        assert b.input_ids.size <= batch_tokens
        assert len(b.rows) <= max_rows


def test_the_engine_character_cap_flags_truncation(fake_engine, embed_tokenizer):
    """Given chars_per_token_cap=1 and seqlen 64, a 100-character text of few tokens is cut to
    64 characters before tokenising and flagged truncated."""
    engine = fake_engine("embed", seqlens=(64,), chars_per_token_cap=1)
    text = "abcd " * 20
    out = engine.embed([text, "short"])
    assert out.truncated.tolist() == [True, False]
    assert engine.rows_seen[0] == embed_tokenizer(text[:64])["input_ids"]
    assert out.n_tokens[0] < 64


def test_an_empty_input_gives_empty_outputs(fake_engine):
    out = fake_engine("embed", seqlens=SEQLENS).embed([])
    assert out.vectors.shape == (0, 256) and out.errors == []
    r = fake_engine("rerank", seqlens=(256,)).rerank([], [])
    assert r.scores.shape == (0,) and r.errors == []


RERANK_SEQLENS = (96, 128, 256)


@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_rerank_scores_come_back_in_the_callers_order(fake_engine, fake_gap_of, rerank_tokenizer, padding_side):
    rng = random.Random(3)
    documents = mixed_texts(n=30, max_words=120)
    queries = [rng.choice(["who?", "what is the capital of China?", "中文查询", "a b c d e f"])
               for _ in documents]
    engine = fake_engine("rerank", seqlens=RERANK_SEQLENS, batch_tokens=512, padding_side=padding_side)
    out = engine.rerank(queries, documents)

    assert len(engine.batches_seen) > 5
    for i, (q, d) in enumerate(zip(queries, documents)):
        ids = expected_rerank_ids(rerank_tokenizer, q, d, RERANK_SEQLENS[-1])
        assert engine.rows_seen[i] == ids, f"row {i} was fed another row's ids"
        expected = 1.0 / (1.0 + np.exp(-fake_gap_of(ids)))
        assert out.scores[i] == pytest.approx(expected, abs=1e-6)
        assert out.n_tokens[i] == len(ids)
    assert out.errors == [None] * len(documents)
    assert out.truncated.any()
    assert len(set(np.round(out.scores, 4))) > 20, "the fake's scores must tell rows apart"


def test_a_cut_document_keeps_the_prompt_around_it_and_is_flagged(fake_engine, rerank_tokenizer):
    engine = fake_engine("rerank", seqlens=(128,))
    long_document = "The quick brown fox jumps over the lazy dog. " * 100
    out = engine.rerank(["what does the fox do?"], [long_document], instruction="Find animal facts")
    fed = engine.rows_seen[0]
    assert out.truncated[0] and out.n_tokens[0] == 128 and out.errors == [None]
    assert fed == expected_rerank_ids(rerank_tokenizer, "what does the fox do?", long_document, 128,
                                      "Find animal facts")
    text = rerank_tokenizer.decode(fed)
    assert text.startswith(RERANK_PREFIX + "<Instruct>: Find animal facts\n<Query>: what does the fox do?\n"
                                           "<Document>: The quick brown fox")
    assert text.endswith(RERANK_SUFFIX)


def test_a_query_too_long_for_the_largest_bucket_gives_an_error_row_and_the_others_run(fake_engine):
    engine = fake_engine("rerank", seqlens=(96, 128))
    out = engine.rerank(["short", "very long query " * 50, "short"], ["doc one", "doc two", "doc three"])
    assert out.errors[0] is None and out.errors[2] is None
    assert out.errors[1].startswith("query_too_long")
    assert np.isnan(out.scores[1]) and np.isfinite(out.scores[[0, 2]]).all()
    assert out.n_tokens[1] == 0
    assert 1 not in engine.rows_seen, "an error row must never reach the model"
