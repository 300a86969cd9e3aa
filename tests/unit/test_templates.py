"""The prompt formats are exactly those of the Qwen3 model cards (shared/reference/qwen3.md)."""

import pytest

from common import defaults

CARD_RETRIEVAL_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"
CARD_SYMMETRIC_INSTRUCTION = "Retrieve semantically similar text"
from common.templates import RERANK_PREFIX, RERANK_SUFFIX, format_query, format_rerank_document, format_rerank_head, query_prompt
from harness.model_card import ModelCardReranker

card_body = ModelCardReranker.format_instruction  # the model card's own body, spelled out apart from ours


def format_rerank_body(query, document, instruction=CARD_RETRIEVAL_INSTRUCTION):
    return card_body(instruction, query, document)


CARD_PREFIX = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the "
    'Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n'
)
CARD_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"


def test_the_default_instructions_are_the_model_cards():
    assert defaults.DEFAULT_RETRIEVAL_INSTRUCTION == CARD_RETRIEVAL_INSTRUCTION
    assert defaults.DEFAULT_RERANK_INSTRUCTION == CARD_RETRIEVAL_INSTRUCTION
    assert defaults.DEFAULT_SYMMETRIC_INSTRUCTION == CARD_SYMMETRIC_INSTRUCTION


def test_a_query_is_instruction_newline_query_with_no_space_after_the_colon():
    assert format_query("what is rope?") == f"Instruct: {CARD_RETRIEVAL_INSTRUCTION}\nQuery:what is rope?"
    assert format_query("q", "Find code") == "Instruct: Find code\nQuery:q"
    assert "Query: " not in format_query("q")


def test_a_query_without_instruction_is_the_raw_text():
    assert format_query("  raw text ", None) == "  raw text "


def test_symmetric_tasks_put_the_similarity_instruction_on_both_sides():
    a, b = (format_query(t, defaults.DEFAULT_SYMMETRIC_INSTRUCTION) for t in ("a cat sits", "a dog runs"))
    assert a == f"Instruct: {CARD_SYMMETRIC_INSTRUCTION}\nQuery:a cat sits"
    assert b == f"Instruct: {CARD_SYMMETRIC_INSTRUCTION}\nQuery:a dog runs"


def test_the_query_prompt_is_what_precedes_the_query_text():
    assert query_prompt(CARD_RETRIEVAL_INSTRUCTION) + "q" == format_query("q")
    assert query_prompt(None) == ""


def test_the_reranker_prefix_and_suffix_are_the_model_cards():
    assert RERANK_PREFIX == CARD_PREFIX
    assert RERANK_SUFFIX == CARD_SUFFIX


def test_our_reranker_body_is_the_model_cards_head_plus_space_plus_document():
    body = format_rerank_body("q", "d", "inst")
    assert body == "<Instruct>: inst\n<Query>: q\n<Document>: d"
    assert format_rerank_head("q", "inst") + format_rerank_document("d") == body
    assert format_rerank_head("q", "inst").endswith("<Document>:")


AWKWARD_DOCUMENTS = [
    "",
    "plain words",
    " leading space",
    "   three leading spaces",
    "\nleading newline",
    "\n\n\ntwo more newlines",
    "\tleading tab",
    "1984 starts with a digit",
    "42",
    "!!! punctuation first",
    "...and an ellipsis",
    "'s a contraction first",
    "-- dashes",
    "北京是中华人民共和国的首都。",
    "🎉 emoji first",
    "trailing spaces   ",
    " ",
    "\n",
]


@pytest.mark.parametrize("document", AWKWARD_DOCUMENTS, ids=repr)
def test_tokenising_head_and_document_apart_gives_the_ids_of_the_whole_body(rerank_tokenizer, document):
    """Given a document that starts awkwardly, when the head and ' ' + document are tokenised
    separately (as the engine does), then the ids equal tokenising the whole body at once."""
    tok = rerank_tokenizer
    query = "what is it?"
    whole = tok(format_rerank_body(query, document), add_special_tokens=False)["input_ids"]
    head = tok(format_rerank_head(query), add_special_tokens=False)["input_ids"]
    doc = tok(format_rerank_document(document), add_special_tokens=False)["input_ids"]
    assert head + doc == whole


@pytest.mark.parametrize("query", ["", " spaced ", "中文查询", "ends with newline\n", "7"], ids=repr)
def test_the_head_splits_cleanly_whatever_the_query(rerank_tokenizer, query):
    tok = rerank_tokenizer
    document = "a document"
    whole = tok(format_rerank_body(query, document), add_special_tokens=False)["input_ids"]
    head = tok(format_rerank_head(query), add_special_tokens=False)["input_ids"]
    doc = tok(format_rerank_document(document), add_special_tokens=False)["input_ids"]
    assert head + doc == whole


def test_prefix_and_suffix_tokenise_to_the_same_ids_alone_and_inside_the_prompt(rerank_tokenizer):
    tok = rerank_tokenizer
    prefix = tok(RERANK_PREFIX, add_special_tokens=False)["input_ids"]
    suffix = tok(RERANK_SUFFIX, add_special_tokens=False)["input_ids"]
    body = tok(format_rerank_body("q", "d"), add_special_tokens=False)["input_ids"]
    whole = RERANK_PREFIX + format_rerank_body("q", "d") + RERANK_SUFFIX
    assert tok(whole, add_special_tokens=False)["input_ids"] == prefix + body + suffix
    im_start, im_end = tok.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"])
    assert prefix[0] == im_start and im_end in prefix
    assert suffix[0] == im_end
