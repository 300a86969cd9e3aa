"""The Qwen3 prompt formats, exactly as in the official model cards.

Embedding queries:   "Instruct: {instruction}\\nQuery:{query}"  (no space after "Query:")
Embedding documents: raw text, no instruction.
Reranker:            prefix + "<Instruct>: {i}\\n<Query>: {q}\\n<Document>: {d}" + suffix
"""

from common.defaults import (
    DEFAULT_RERANK_INSTRUCTION,
    DEFAULT_RETRIEVAL_INSTRUCTION,
)

RERANK_SYSTEM_PROMPT = (
    "Judge whether the Document meets the requirements based on the Query and the Instruct "
    'provided. Note that the answer can only be "yes" or "no".'
)
RERANK_PREFIX = f"<|im_start|>system\n{RERANK_SYSTEM_PROMPT}<|im_end|>\n<|im_start|>user\n"
RERANK_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"


def format_query(query: str, instruction: str | None = DEFAULT_RETRIEVAL_INSTRUCTION) -> str:
    """An embedding query with its instruction; None means no instruction (raw text)."""
    if instruction is None:
        return query
    return f"Instruct: {instruction}\nQuery:{query}"


def query_prompt(instruction: str | None) -> str:
    """The text placed before a query: what sentence-transformers calls a prompt."""
    return "" if instruction is None else format_query("", instruction)


def format_rerank_head(query: str, instruction: str = DEFAULT_RERANK_INSTRUCTION) -> str:
    """The reranker body up to the document, ending in "<Document>:".

    The space before the document belongs to the document's first pre-token under Qwen's
    split pattern, so the document is tokenised as " " + document and the two halves give
    exactly the ids of the whole body.
    """
    return f"<Instruct>: {instruction}\n<Query>: {query}\n<Document>:"


def format_rerank_document(document: str) -> str:
    return f" {document}"
