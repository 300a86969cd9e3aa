"""The offline tokenizer has the real Qwen3 ids, and each model's post-processing is the published one."""

from workers.engines.torch_engine import token_id

# The real Qwen3 ids (shared/reference/qwen3.md), written out rather than looked up.
ENDOFTEXT_ID = 151643
IM_END_ID = 151645
YES_ID = 9693
NO_ID = 2152


def test_yes_and_no_resolve_to_their_real_ids(rerank_tokenizer):
    assert token_id(rerank_tokenizer, "yes") == YES_ID
    assert token_id(rerank_tokenizer, "no") == NO_ID
    assert rerank_tokenizer("yes", add_special_tokens=False)["input_ids"] == [YES_ID]
    assert rerank_tokenizer("no", add_special_tokens=False)["input_ids"] == [NO_ID]


def test_endoftext_is_151643_and_is_not_the_eos_token(embed_tokenizer, rerank_tokenizer):
    for tok in (embed_tokenizer, rerank_tokenizer):
        assert token_id(tok, "<|endoftext|>") == ENDOFTEXT_ID
        assert tok.eos_token == "<|im_end|>" and tok.eos_token_id == IM_END_ID
        assert len(tok) == 151669


def test_the_embedding_tokenizer_appends_endoftext(embed_tokenizer):
    ids = embed_tokenizer("hello world")["input_ids"]
    assert ids[-1] == ENDOFTEXT_ID
    assert ids[:-1] == embed_tokenizer("hello world", add_special_tokens=False)["input_ids"]
    assert embed_tokenizer("")["input_ids"] == [ENDOFTEXT_ID]


def test_the_reranker_tokenizer_appends_nothing(rerank_tokenizer):
    assert rerank_tokenizer("hello world")["input_ids"] == rerank_tokenizer(
        "hello world", add_special_tokens=False)["input_ids"]
    assert ENDOFTEXT_ID not in rerank_tokenizer("hello world")["input_ids"]


def test_digits_are_split_one_by_one_and_special_tokens_are_single_ids(rerank_tokenizer):
    tok = rerank_tokenizer
    assert len(tok("12345", add_special_tokens=False)["input_ids"]) == 5
    assert tok("<|im_start|>user", add_special_tokens=False)["input_ids"][0] == 151644


def test_engines_resolve_the_same_ids(tiny_engine):
    embed = tiny_engine("embed", dtype="fp32")
    rerank = tiny_engine("rerank", dtype="fp32")
    assert embed.endoftext_id == ENDOFTEXT_ID and embed.pad_id == ENDOFTEXT_ID
    assert (rerank.yes_id, rerank.no_id) == (YES_ID, NO_ID)
