"""Reranking: each query's positives and negatives scored by the reranker, then MRR@10, nDCG@10
and mean average precision over queries (x100).

Which queries count, decided here and reported with the figures:
- a query with no positive passage has no defined MRR/nDCG/AP: it is not scored at all, left
  out of the means and counted (`queries_without_positive`);
- a query with positives but no negatives is scored (it is trivially perfect) and counted
  (`queries_without_negative`), because a file made only of such queries measures nothing;
- a query with any pair the engine could not score is left out and counted (`queries_failed`).
Ties between a positive and a negative are ranked against the model (see metrics.py) and the
queries where that happened are counted (`queries_with_ties`).
"""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from workers.eval import metrics
from workers.eval.inputs import RerankQuery
from workers.eval.running import DEFAULT_CHUNK_ROWS, EngineRows, progress_bar, rerank_pairs


@dataclass
class RerankPairs:
    queries: list[str]
    documents: list[str]
    owner: np.ndarray      # [pairs] index into the query list, ascending: a query's pairs are contiguous
    relevant: np.ndarray   # [pairs] bool

    def query_slices(self) -> list[slice]:
        _, starts, counts = np.unique(self.owner, return_index=True, return_counts=True)
        return [slice(int(a), int(a + n)) for a, n in zip(starts, counts)]


def flatten_queries(queries: Sequence[RerankQuery], positive_required: bool = True) -> RerankPairs:
    """Every (query, passage) pair, positives first; by default only of the queries that have a
    positive (agreement between engines needs no labels, so it takes them all)."""
    texts, documents, owner, relevant = [], [], [], []
    for index, q in enumerate(queries):
        if positive_required and not q.positives:
            continue
        for passages, label in ((q.positives, True), (q.negatives, False)):
            for passage in passages:
                texts.append(q.query)
                documents.append(passage)
                owner.append(index)
                relevant.append(label)
    return RerankPairs(texts, documents, np.array(owner, dtype=np.int64), np.array(relevant, dtype=bool))


def score_reranking(queries: Sequence[RerankQuery], pairs: RerankPairs, scored: EngineRows,
                    k: int = metrics.DEFAULT_CUTOFF) -> dict:
    ok = scored.ok
    per_query = {"mrr": [], "ndcg": [], "ap": []}
    failed = ties = 0
    slices = pairs.query_slices()
    for rows in slices:
        if not ok[rows].all():
            failed += 1
            continue
        s, r = scored.values[rows], pairs.relevant[rows]
        per_query["mrr"].append(metrics.score_reciprocal_rank(s, r, k))
        per_query["ndcg"].append(metrics.score_ndcg(s, r, k))
        per_query["ap"].append(metrics.score_average_precision(s, r))
        ties += metrics.has_tie_across_labels(s, r)
    n_scored = len(per_query["ap"])
    return {
        f"mrr_at_{k}_x100": mean_x100(per_query["mrr"]),
        f"ndcg_at_{k}_x100": mean_x100(per_query["ndcg"]),
        "map_x100": mean_x100(per_query["ap"]),
        "cutoff_k": k,
        "queries": len(queries),
        "queries_scored": n_scored,
        "queries_without_positive": sum(not q.positives for q in queries),
        "queries_without_negative": sum(bool(q.positives) and not q.negatives for q in queries),
        "queries_failed": failed,
        "queries_with_ties": ties,
        "pairs_scored": len(pairs.owner),
        "passages_per_query_mean": len(pairs.owner) / max(1, len(slices)),
        "first_error": scored.first_error(),
    }


def evaluate_reranking(engine, queries: Sequence[RerankQuery], instruction: str, k: int = metrics.DEFAULT_CUTOFF,
                       chunk_rows: int = DEFAULT_CHUNK_ROWS, progress=progress_bar) -> dict:
    pairs = flatten_queries(queries)
    with progress("reranking", len(pairs.owner)) as advance:
        scored = rerank_pairs(engine, pairs.queries, pairs.documents, instruction, advance, chunk_rows)
    return score_reranking(queries, pairs, scored, k)


def mean_x100(values: list[float]) -> float:
    return 100 * float(np.mean(values)) if values else float("nan")
