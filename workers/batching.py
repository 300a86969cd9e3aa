"""Tokenise, cap, truncate, bucket, pad, and restore order. No model code here.

Every input row becomes a TokenizedRow (its ids, whether anything was cut, or why it cannot be
run). Rows are then sorted by length into buckets (the configured sequence lengths), batched
under a padded-token budget, padded, and the engine writes each batch's results back at the
rows' original positions, so callers see their own order.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from common.defaults import SEQLEN_MULTIPLE
from common.errors import ConfigError
from common.templates import format_rerank_document, format_rerank_head


@dataclass
class TokenizedRow:
    ids: list[int]
    truncated: bool
    error: str | None = None  # set when the row cannot be run at all; ids is then empty


@dataclass
class Batch:
    rows: np.ndarray        # [b] positions of these rows in the caller's input
    input_ids: np.ndarray   # [b, seqlen] int64, padded
    lengths: np.ndarray     # [b] real token counts
    padding_side: str

    @property
    def seqlen(self) -> int:
        return int(self.input_ids.shape[1])


def cap_chars(text: str, max_chars: int) -> tuple[str, bool]:
    """Cut a text before tokenising so a 200 MB document costs no more than a long one."""
    if len(text) > max_chars:
        return text[:max_chars], True
    return text, False


def tokenize_texts(tokenizer, texts: Sequence[str]) -> list[list[int]]:
    """Plain ids with no special tokens, tokenised in one batched call (Rust, parallel)."""
    if not texts:
        return []
    return tokenizer(list(texts), add_special_tokens=False, return_attention_mask=False)["input_ids"]


def tokenize_for_embedding(tokenizer, texts: Sequence[str], max_tokens: int, endoftext_id: int,
                           max_chars: int) -> list[TokenizedRow]:
    """Ids for the embedding model: content truncated to max_tokens - 1, then <|endoftext|>.

    The published tokenizer's post-processor appends <|endoftext|>; fixed-shape paths build ids
    by hand, so it is appended here explicitly and always survives truncation.
    """
    capped = [cap_chars(t, max_chars) for t in texts]
    rows = []
    for ids, (_, char_cut) in zip(tokenize_texts(tokenizer, [c[0] for c in capped]), capped):
        token_cut = len(ids) > max_tokens - 1
        rows.append(TokenizedRow(ids[: max_tokens - 1] + [endoftext_id], char_cut or token_cut))
    return rows


@dataclass(frozen=True)
class RerankPromptIds:
    prefix: list[int]
    suffix: list[int]


def tokenize_for_rerank(tokenizer, prompt: RerankPromptIds, queries: Sequence[str], documents: Sequence[str],
                        instruction: str, max_tokens: int, max_chars: int) -> list[TokenizedRow]:
    """prefix + head(instruction, query) + document ids + suffix, cutting only the document's end.

    Prefix, instruction, query and suffix always survive; a row whose fixed parts alone exceed
    max_tokens gets an error instead of a meaningless score.
    """
    if len(queries) != len(documents):
        raise ConfigError(f"rerank needs one query per document: {len(queries)} queries, {len(documents)} documents")
    unique_queries = list(dict.fromkeys(queries))
    head_ids = dict(zip(unique_queries, tokenize_texts(
        tokenizer, [format_rerank_head(cap_chars(q, max_chars)[0], instruction) for q in unique_queries])))
    capped = [cap_chars(d, max_chars) for d in documents]
    doc_ids = tokenize_texts(tokenizer, [format_rerank_document(c[0]) for c in capped])
    fixed = len(prompt.prefix) + len(prompt.suffix)
    rows = []
    for query, ids, (_, char_cut) in zip(queries, doc_ids, capped):
        head = head_ids[query]
        budget = max_tokens - fixed - len(head)
        if budget < 1 or len(query) > max_chars:
            rows.append(TokenizedRow([], True, error=(
                f"query_too_long: instruction + query take {len(head) + fixed} tokens of the "
                f"{max_tokens}-token limit; raise the largest sequence length or shorten the query")))
            continue
        rows.append(TokenizedRow(prompt.prefix + head + ids[:budget] + prompt.suffix,
                                 char_cut or len(ids) > budget))
    return rows


def bucket_for(length: int, seqlens: tuple[int, ...]) -> int:
    for s in seqlens:
        if length <= s:
            return s
    raise ConfigError(f"a row of {length} tokens exceeds the largest sequence length {seqlens[-1]}")


def round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def plan_batches(lengths: Sequence[int], seqlens: tuple[int, ...], batch_tokens: int, max_batch_rows: int,
                 pad_to_bucket: bool) -> list[tuple[np.ndarray, int]]:
    """Group rows into (row positions, padded length) batches.

    Rows are sorted by length (stable, so ties keep input order) and cut into batches that stay
    inside one bucket and under `batch_tokens` padded tokens. A batch is padded to its bucket's
    length when shapes must be fixed (compiled backends), else to its longest row rounded up to
    a multiple of 16, which wastes less compute on a dynamic-shape backend.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    order = np.argsort(lengths, kind="stable")
    buckets = np.array([bucket_for(int(n), seqlens) for n in lengths[order]], dtype=np.int64)
    batches = []
    for seqlen in seqlens:
        members = order[buckets == seqlen]
        rows_per_batch = max(1, min(max_batch_rows, batch_tokens // seqlen))
        for start in range(0, len(members), rows_per_batch):
            rows = members[start:start + rows_per_batch]
            padded = seqlen if pad_to_bucket else min(seqlen, round_up(int(lengths[rows].max()), SEQLEN_MULTIPLE))
            batches.append((rows, padded))
    return batches


def pad_rows(ids: Sequence[Sequence[int]], rows: np.ndarray, seqlen: int, pad_id: int, padding_side: str) -> Batch:
    input_ids = np.full((len(rows), seqlen), pad_id, dtype=np.int64)
    lengths = np.array([len(ids[r]) for r in rows], dtype=np.int64)
    for i, r in enumerate(rows):
        n = lengths[i]
        if padding_side == "right":
            input_ids[i, :n] = ids[r]
        else:
            input_ids[i, seqlen - n:] = ids[r]
    return Batch(rows=rows, input_ids=input_ids, lengths=lengths, padding_side=padding_side)
