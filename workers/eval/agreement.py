"""Backend agreement: the same inputs through two engines (torch fp32 vs bf16, torch vs onnx, ...).

Engines are named only by EngineSpec and built by the registry, so any backend the registry
knows can be compared. They run one after the other, the first released before the second
loads: two 0.6B engines side by side would double the memory for nothing.

Embeddings: cosine between the two vectors of each text (worst, mean), and on an STS file both
engines' Spearman against the gold scores (the vendor's "torch vs compiled" comparison).
Reranker: |P(yes) difference| per pair (worst, mean), and per query how far the two rankings
agree: Spearman and Kendall tau-b of the scores, and whether the top passage is the same.
"""

import gc
from collections.abc import Callable, Sequence

import numpy as np

from workers.engines.base import EngineSpec
from workers.engines.registry import create_engine
from workers.eval import metrics
from workers.eval.inputs import RerankQuery, StsPair
from workers.eval.report import describe_engine
from workers.eval.reranking import RerankPairs, flatten_queries
from workers.eval.running import DEFAULT_CHUNK_ROWS, EngineRows, embed_texts, progress_bar, rerank_pairs
from workers.eval.sts import index_sts_texts, score_sts

WORST_TEXT_CHARS = 200  # enough of the worst row to recognise it in the report


def agree_on_sts(specs: Sequence[EngineSpec], pairs: Sequence[StsPair], instruction: str | None,
                 make_engine: Callable = create_engine, chunk_rows: int = DEFAULT_CHUNK_ROWS,
                 progress=progress_bar) -> tuple[list[dict], dict]:
    """Both engines embed the STS texts exactly as `workers eval sts` does; returns (engine
    descriptions, figures)."""
    texts = index_sts_texts(pairs, instruction)

    def work(engine, label):
        with progress(f"engine {label}: embedding", len(texts.texts)) as advance:
            return describe_engine(engine), embed_texts(engine, texts.texts, advance, chunk_rows=chunk_rows)

    (about_a, a), (about_b, b) = run_each(specs, make_engine, work)
    results = compare_embeddings(a, b)
    spearman_a, spearman_b = (score_sts(pairs, texts, rows)["spearman_x100"] for rows in (a, b))
    results.update(sts_spearman_a_x100=spearman_a, sts_spearman_b_x100=spearman_b,
                   sts_spearman_diff_x100=spearman_b - spearman_a)
    if results["worst_text_index"] is not None:
        results["worst_text"] = texts.texts[results["worst_text_index"]][:WORST_TEXT_CHARS]
    return [about_a, about_b], results


def agree_on_reranking(specs: Sequence[EngineSpec], queries: Sequence[RerankQuery], instruction: str,
                       make_engine: Callable = create_engine, chunk_rows: int = DEFAULT_CHUNK_ROWS,
                       progress=progress_bar) -> tuple[list[dict], dict]:
    """Both engines score every (query, passage) pair, labelled or not."""
    pairs = flatten_queries(queries, positive_required=False)

    def work(engine, label):
        with progress(f"engine {label}: reranking", len(pairs.owner)) as advance:
            return describe_engine(engine), rerank_pairs(engine, pairs.queries, pairs.documents, instruction,
                                                         advance, chunk_rows)

    (about_a, a), (about_b, b) = run_each(specs, make_engine, work)
    return [about_a, about_b], compare_rerank_scores(pairs, a, b)


def run_each(specs: Sequence[EngineSpec], make_engine: Callable, work: Callable) -> list:
    """work(engine, label) for each spec in turn ("a", "b", ...), one engine in memory at a time."""
    results = []
    for label, spec in zip("abcdefgh", specs):
        engine = make_engine(spec)
        results.append(work(engine, label))
        del engine
        gc.collect()
    return results


def compare_embeddings(a: EngineRows, b: EngineRows) -> dict:
    ok = a.ok & b.ok
    cosines = metrics.measure_cosines(a.values[ok], b.values[ok])
    rows = np.flatnonzero(ok)
    return {
        "texts": len(ok),
        "texts_compared": int(ok.sum()),
        "texts_failed_a": int((~a.ok).sum()),
        "texts_failed_b": int((~b.ok).sum()),
        "first_error": a.first_error() or b.first_error(),
        "cosine_worst": float(cosines.min()) if cosines.size else float("nan"),
        "cosine_mean": float(cosines.mean()) if cosines.size else float("nan"),
        "worst_text_index": int(rows[cosines.argmin()]) if cosines.size else None,
    }


def compare_rerank_scores(pairs: RerankPairs, a: EngineRows, b: EngineRows) -> dict:
    ok = a.ok & b.ok
    diff = np.abs(a.values[ok].astype(np.float64) - b.values[ok].astype(np.float64))
    spearman, kendall, top1 = [], [], []
    for rows in pairs.query_slices():
        if not ok[rows].all() or rows.stop - rows.start < 2:
            continue  # a ranking needs two passages, both engines' scores for each
        sa, sb = a.values[rows], b.values[rows]
        spearman.append(metrics.correlate_spearman(sa, sb))
        kendall.append(metrics.correlate_kendall(sa, sb))
        top1.append(bool(np.any((sa == sa.max()) & (sb == sb.max()))))  # some passage on top in both
    # A query whose scores are all equal in one engine has no defined correlation: counted, not averaged.
    defined = ~np.isnan(np.array(kendall, dtype=np.float64))
    return {
        "pairs": len(ok),
        "pairs_compared": int(ok.sum()),
        "pairs_failed_a": int((~a.ok).sum()),
        "pairs_failed_b": int((~b.ok).sum()),
        "first_error": a.first_error() or b.first_error(),
        "score_diff_worst": float(diff.max()) if diff.size else float("nan"),
        "score_diff_mean": float(diff.mean()) if diff.size else float("nan"),
        "queries_ranked": len(top1),
        "queries_correlation_undefined": int((~defined).sum()),
        "spearman_mean": nan_mean(spearman),
        "spearman_worst": nan_min(spearman),
        "kendall_mean": nan_mean(kendall),
        "kendall_worst": nan_min(kendall),
        "top1_agreement": float(np.mean(top1)) if top1 else float("nan"),
    }


def nan_mean(values: list[float]) -> float:
    x = np.array(values, dtype=np.float64)
    x = x[~np.isnan(x)]
    return float(x.mean()) if x.size else float("nan")


def nan_min(values: list[float]) -> float:
    x = np.array(values, dtype=np.float64)
    x = x[~np.isnan(x)]
    return float(x.min()) if x.size else float("nan")
