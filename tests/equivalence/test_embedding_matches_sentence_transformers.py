"""Our embeddings equal sentence-transformers' on the same checkpoint folder (fp32).

The folder carries the module files the published Qwen3-Embedding folders carry (last-token
pooling, Normalize, a 'query' prompt), so `SentenceTransformer(folder)` is the reference
implementation of the model card's embedding recipe; it is not our code.
"""

import numpy as np
import pytest

from common.defaults import DEFAULT_SYMMETRIC_INSTRUCTION
from common.templates import format_query, query_prompt
from workers.eval.metrics import measure_cosines

SEQLENS = (16, 32, 64, 128)
MAX_TOKENS = SEQLENS[-1]
ENDOFTEXT_ID = 151643
SAME = 0.99999  # cosine that counts as the same vector in fp32


def renormalise(x):
    x = np.asarray(x, np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def assert_same_vectors(ours, reference, texts):
    ours = np.asarray(ours)
    assert ours.shape == np.asarray(reference).shape
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    cos = measure_cosines(ours, reference)
    worst = int(np.argmin(cos))
    assert cos.min() >= SAME, f"row {worst} ({texts[worst][:60]!r}) has cosine {cos[worst]:.7f} to the reference"


@pytest.fixture(scope="module")
def st_model(tiny_embed_model):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(tiny_embed_model), device="cpu")
    model.max_seq_length = MAX_TOKENS  # the reference truncates where our largest bucket does
    return model


@pytest.fixture
def st_padding(st_model):
    """set(side): make sentence-transformers pad on that side for this test only."""
    original = st_model.tokenizer.padding_side

    def set_side(side):
        st_model.tokenizer.padding_side = side

    yield set_side
    st_model.tokenizer.padding_side = original


def reference(st_model, texts, batch_size=64, **kwargs):
    return st_model.encode(list(texts), batch_size=batch_size, convert_to_numpy=True, **kwargs)


@pytest.fixture(scope="module")
def engine(tiny_engine):
    return tiny_engine("embed", dtype="fp32", seqlens=SEQLENS)


# --- the reference itself is what we think it is -------------------------------------------------

def test_the_reference_pools_the_last_token_normalises_and_knows_the_query_prompt(st_model):
    pooling = st_model[1]
    assert pooling.get_config_dict()["pooling_mode"] == "lasttoken"
    assert type(st_model[2]).__name__ == "Normalize"
    assert st_model.prompts["query"] == query_prompt("Given a web search query, retrieve relevant passages "
                                                     "that answer the query")
    assert st_model.tokenizer("x")["input_ids"][-1] == ENDOFTEXT_ID


# --- documents (no instruction) --------------------------------------------------------------------

@pytest.mark.parametrize("st_side", ["left", "right"])
@pytest.mark.parametrize("our_side", ["left", "right"])
@pytest.mark.parametrize("batch", ["one_row_per_batch", "many_rows_per_batch"])
def test_documents_equal_sentence_transformers_whatever_the_padding_side_and_batch_size(
        tiny_engine, st_model, st_padding, mixed_texts, our_side, st_side, batch):
    """Given mixed-length texts spanning every bucket, when our engine and sentence-transformers
    embed them with any padding side and batch size, then every vector is the same."""
    one = batch == "one_row_per_batch"
    engine = tiny_engine("embed", dtype="fp32", seqlens=SEQLENS, padding_side=our_side,
                         **({"max_batch_rows": 1} if one else {}))
    st_padding(st_side)
    ours = engine.embed(mixed_texts)
    ref = reference(st_model, mixed_texts, batch_size=1 if one else 64)
    assert_same_vectors(ours.vectors, ref, mixed_texts)
    assert ours.errors == [None] * len(mixed_texts)
    assert ours.n_tokens.tolist() == [len(x) for x in
                                      st_model.tokenizer(mixed_texts, truncation=True, max_length=MAX_TOKENS)[
                                          "input_ids"]]


def test_left_and_right_padding_give_identical_vectors(tiny_engine, mixed_texts):
    left = tiny_engine("embed", dtype="fp32", seqlens=SEQLENS, padding_side="left").embed(mixed_texts)
    right = tiny_engine("embed", dtype="fp32", seqlens=SEQLENS, padding_side="right").embed(mixed_texts)
    assert measure_cosines(left.vectors, right.vectors).min() >= SAME
    np.testing.assert_allclose(left.vectors, right.vectors, atol=1e-5)


def test_a_text_embeds_the_same_alone_and_inside_a_batch_of_any_length(engine, mixed_texts):
    together = engine.embed(mixed_texts).vectors
    alone = np.stack([engine.embed([t]).vectors[0] for t in mixed_texts[:9]])
    assert measure_cosines(alone, together[:9]).min() >= SAME


# --- queries (instruction) ---------------------------------------------------------------------------

@pytest.mark.parametrize("our_side", ["left", "right"])
def test_queries_with_the_default_instruction_equal_the_query_prompt(tiny_engine, st_model, mixed_texts, our_side):
    engine = tiny_engine("embed", dtype="fp32", seqlens=SEQLENS, padding_side=our_side)
    ours = engine.embed([format_query(t) for t in mixed_texts])
    ref = reference(st_model, mixed_texts, prompt_name="query")
    assert_same_vectors(ours.vectors, ref, mixed_texts)


def test_a_custom_instruction_equals_the_same_prompt(engine, st_model, mixed_texts):
    instruction = "Given a question about rivers, find the passage that answers it"
    ours = engine.embed([format_query(t, instruction) for t in mixed_texts])
    assert_same_vectors(ours.vectors, reference(st_model, mixed_texts, prompt=query_prompt(instruction)), mixed_texts)


def test_symmetric_texts_equal_the_similarity_prompt(engine, st_model, mixed_texts):
    ours = engine.embed([format_query(t, DEFAULT_SYMMETRIC_INSTRUCTION) for t in mixed_texts])
    ref = reference(st_model, mixed_texts, prompt=query_prompt(DEFAULT_SYMMETRIC_INSTRUCTION))
    assert_same_vectors(ours.vectors, ref, mixed_texts)


def test_the_instruction_changes_the_vector(engine, mixed_texts):
    texts = mixed_texts[1:8]
    plain = engine.embed(texts).vectors
    query = engine.embed([format_query(t) for t in texts]).vectors
    assert measure_cosines(plain, query).max() < 0.99


# --- MRL ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dim", [32, 48, 64])
def test_an_mrl_dimension_equals_sentence_transformers_truncate_dim_renormalised(engine, st_model, mixed_texts, dim):
    ours = engine.embed(mixed_texts, dim=dim)
    ref = reference(st_model, mixed_texts, truncate_dim=dim)
    assert ref.shape[1] == dim and ours.vectors.shape[1] == dim
    assert_same_vectors(ours.vectors, renormalise(ref), mixed_texts)


# --- truncation ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("our_side", ["left", "right"])
def test_a_text_too_long_is_cut_like_the_reference_and_keeps_endoftext_last(tiny_engine, st_model, monkeypatch,
                                                                            our_side):
    engine = tiny_engine("embed", dtype="fp32", seqlens=SEQLENS, padding_side=our_side)
    fed = []
    forward = engine.forward_embed

    def recording_forward(batch):
        fed.append(batch)
        return forward(batch)

    monkeypatch.setattr(engine, "forward_embed", recording_forward)
    texts = ["short one", "word " * 400, "长" * 1000, "short two"]
    ours = engine.embed(texts)

    assert ours.truncated.tolist() == [False, True, True, False]
    assert ours.n_tokens.tolist()[1:3] == [MAX_TOKENS, MAX_TOKENS]
    assert fed and {batch.padding_side for batch in fed} == {our_side}
    for batch in fed:
        for i, position in enumerate(batch.rows):
            n = batch.lengths[i]
            ids = batch.input_ids[i, :n] if our_side == "right" else batch.input_ids[i, batch.seqlen - n:]
            assert ids[-1] == ENDOFTEXT_ID, "the sequence must end with <|endoftext|>, also when cut"
            if position in (1, 2):
                assert n == MAX_TOKENS
    assert_same_vectors(ours.vectors, reference(st_model, texts), texts)


def test_long_runs_of_spaces_or_dashes_are_not_cut_before_the_model_would_cut_them(engine, st_model):
    """Given texts with long runs of one character (Qwen has single tokens of up to 128 spaces or
    ~100 dashes), when they are embedded, then they equal the reference: the character cap must
    never decide which tokens the model sees (defaults.CHARS_PER_TOKEN_CAP says it never does)."""
    texts = [" " * 5000 + "the words at the end", "title\n" + "-" * 6000 + "\nbody text", "=" * 9000]
    ours = engine.embed(texts)
    ref_ids = st_model.tokenizer(texts, truncation=True, max_length=MAX_TOKENS)["input_ids"]
    assert ours.n_tokens.tolist() == [len(x) for x in ref_ids]
    assert_same_vectors(ours.vectors, reference(st_model, texts), texts)


# --- the tiny model can tell texts apart, so the tests above can fail ---------------------------------

def test_unrelated_texts_get_clearly_different_vectors(engine, mixed_texts):
    vectors = engine.embed(mixed_texts).vectors
    sims = vectors @ vectors.T
    off_diagonal = sims[~np.eye(len(vectors), dtype=bool)]
    assert off_diagonal.max() < 0.95, f"two different texts have cosine {off_diagonal.max():.4f}"
    assert np.median(off_diagonal) < 0.6


def test_matching_against_the_wrong_reference_row_fails(engine, st_model, mixed_texts):
    ours = engine.embed(mixed_texts).vectors
    shifted = np.roll(reference(st_model, mixed_texts), 1, axis=0)
    assert measure_cosines(ours, shifted).max() < 0.99


def test_one_changed_word_or_the_wrong_end_token_changes_the_vector(tiny_embed_model, engine):
    """The last-token vector depends on the whole input, including the end token: pooling at
    <|im_end|> (tokenizer.eos_token, a common bug) instead of <|endoftext|> must not pass."""
    import torch
    from transformers import AutoModel

    a, b = engine.embed(["the river runs to the sea", "the river runs to the lake"]).vectors
    assert float(a @ b) < 0.99

    model = AutoModel.from_pretrained(str(tiny_embed_model), dtype=torch.float32).eval()
    content = engine.tokenizer("the river runs to the sea", add_special_tokens=False)["input_ids"]
    with torch.inference_mode():
        right = model(input_ids=torch.tensor([content + [ENDOFTEXT_ID]])).last_hidden_state[0, -1]
        wrong = model(input_ids=torch.tensor([content + [151645]])).last_hidden_state[0, -1]
    right, wrong = right.numpy(), wrong.numpy()
    assert measure_cosines([right], [a])[0] >= SAME
    assert measure_cosines([wrong], [a])[0] < 0.99
