"""Our reranker scores equal the model card's algorithm (harness/model_card.py, plain transformers).

The reference is the Qwen3-Reranker model card's code: the full causal LM, left padding, prefix
and suffix tokenised apart, the body truncated with truncation='longest_first' to what is left of
max_length, full logits at the last position, softmax over [no, yes]. None of it uses our engine,
batching or templates module (the strings are spelled out again there).
"""

import numpy as np
import pytest

from harness.model_card import ModelCardReranker

SEQLENS = (96, 128, 256)
MAX_LENGTH = SEQLENS[-1]
SAME = 1e-5  # abs difference of P(yes) that counts as the same score in fp32

QUERIES = ["What is the capital of China?", "Explain gravity", "中国的首都是哪里？", "what does a reranker do"]
DOCUMENTS = [
    "The capital of China is Beijing.",
    "Gravity is a force that attracts two bodies towards each other. " * 30,  # must be truncated
    "北京是中华人民共和国的首都，也是全国的政治、文化中心。",
    "",
    " leading space, then 42 reasons",
    "\nstarts on a new line",
    "1984 is a novel by George Orwell.",
    "emoji 🎉🚀 and punctuation!!!",
    "A reranker scores (query, document) pairs.",
]
# every query with every document: several queries, sharing and not sharing their documents
PAIRS = [(q, d) for q in QUERIES for d in DOCUMENTS]


@pytest.fixture(scope="module")
def card(tiny_rerank_model):
    return ModelCardReranker(str(tiny_rerank_model), max_length=MAX_LENGTH)


@pytest.fixture(scope="module")
def card_scores(card):
    return card.scores([q for q, _ in PAIRS], [d for _, d in PAIRS])


def assert_same_scores(ours, reference):
    diff = np.abs(np.asarray(ours, np.float64) - reference)
    worst = int(np.argmax(diff))
    assert diff.max() <= SAME, f"pair {worst} {PAIRS[worst % len(PAIRS)]!r}: {ours[worst]} vs {reference[worst]}"


def test_the_reference_resolves_yes_and_no_through_the_tokenizer(card):
    assert (card.token_true_id, card.token_false_id) == (9693, 2152)
    assert card.tokenizer.padding_side == "left"


@pytest.mark.parametrize("padding_side", ["left", "right"])
@pytest.mark.parametrize("batch", ["one_row_per_batch", "many_rows_per_batch"])
def test_scores_equal_the_model_card_for_every_padding_side_and_batch_size(tiny_engine, card_scores, padding_side,
                                                                          batch):
    """Given several queries against documents of every kind (one long enough to be cut, one
    Chinese, one empty), when our engine scores the pairs, then every score is the model card's."""
    one = batch == "one_row_per_batch"
    engine = tiny_engine("rerank", dtype="fp32", seqlens=SEQLENS, padding_side=padding_side,
                         **({"max_batch_rows": 1} if one else {}))
    reference, reference_lengths = card_scores
    ours = engine.rerank([q for q, _ in PAIRS], [d for _, d in PAIRS])
    assert ours.errors == [None] * len(PAIRS)
    assert ours.scores.dtype == np.float32
    assert_same_scores(ours.scores, reference)
    assert ours.n_tokens.tolist() == reference_lengths.tolist()
    assert ours.truncated.tolist() == [d is DOCUMENTS[1] for _, d in PAIRS]
    assert (ours.n_tokens[ours.truncated] == MAX_LENGTH).all()


def test_a_custom_instruction_equals_the_model_card_with_that_instruction(tiny_engine, card):
    instruction = "Judge whether the document is written in Chinese"
    queries, documents = [q for q, _ in PAIRS[:12]], [d for _, d in PAIRS[:12]]
    reference, _ = card.scores(queries, documents, instruction=instruction)
    ours = tiny_engine("rerank", dtype="fp32", seqlens=SEQLENS).rerank(queries, documents, instruction=instruction)
    assert np.abs(ours.scores - reference).max() <= SAME
    default = tiny_engine("rerank", dtype="fp32", seqlens=SEQLENS).rerank(queries, documents)
    assert np.abs(default.scores - ours.scores).max() > 1e-3, "the instruction must reach the model"


def test_a_document_cut_at_a_smaller_limit_still_equals_the_model_card(tiny_engine, tiny_rerank_model):
    """The cut lands in the middle of the document: the engine must cut exactly where the card does."""
    card = ModelCardReranker(str(tiny_rerank_model), max_length=96)
    documents = ["Gravity is a force that attracts two bodies towards each other. " * 30,
                 "北京是中华人民共和国的首都，也是全国的政治、文化中心。" * 10,
                 "short"]
    queries = ["Explain gravity", "中国的首都是哪里？", "q"]
    reference, lengths = card.scores(queries, documents)
    ours = tiny_engine("rerank", dtype="fp32", seqlens=(96,)).rerank(queries, documents)
    assert np.abs(ours.scores - reference).max() <= SAME
    assert ours.n_tokens.tolist() == lengths.tolist()
    assert ours.truncated.tolist() == [True, True, False]


def test_a_document_with_a_long_run_of_spaces_is_not_cut_before_the_model_would_cut_it(tiny_engine, card):
    documents = [" " * 9000 + "the answer is at the end", "a normal document"]
    queries = ["where is the answer?", "q"]
    reference, lengths = card.scores(queries, documents)
    ours = tiny_engine("rerank", dtype="fp32", seqlens=SEQLENS).rerank(queries, documents)
    assert ours.n_tokens.tolist() == lengths.tolist()
    assert ours.truncated.tolist() == [False, False]
    assert np.abs(ours.scores - reference).max() <= SAME


def test_the_tiny_reranker_tells_pairs_apart(card_scores):
    """Scores that all sat at 0 or 1 would let a broken engine pass: they must spread."""
    reference, _ = card_scores
    assert reference.std() > 0.05
    assert 0.01 < reference.min() and reference.max() < 0.999
    assert len(np.unique(np.round(reference, 4))) > 0.9 * len(reference)


def test_matching_against_the_wrong_reference_pair_fails(tiny_engine, card_scores):
    reference, _ = card_scores
    ours = tiny_engine("rerank", dtype="fp32", seqlens=SEQLENS).rerank([q for q, _ in PAIRS], [d for _, d in PAIRS])
    assert np.abs(ours.scores - np.roll(reference, 1)).max() > 0.01
