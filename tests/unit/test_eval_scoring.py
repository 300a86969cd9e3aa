"""STS, reranking and agreement scoring over a stub engine whose outputs are set by the test:
which texts reach the engine, which rows count, and that outputs return in the caller's order."""

import math

import numpy as np
import pytest
from scipy import stats

from common.defaults import DEFAULT_SYMMETRIC_INSTRUCTION
from common.templates import format_query
from workers.engines.base import EmbedOutput, RerankOutput
from workers.eval.agreement import compare_embeddings, compare_rerank_scores
from workers.eval.inputs import RerankQuery, StsPair
from workers.eval.reranking import evaluate_reranking, flatten_queries
from workers.eval.running import EngineRows, chunk_by_length, embed_texts, no_progress
from workers.eval.sts import evaluate_sts

POISON = "POISON"


class StubEngine:
    """embed: a sentence "<angle>" (after the instruction) becomes [cos, sin] of that angle, so
    the cosine of two sentences is cos(angle1 - angle2). rerank: a document "<score>" scores
    that number. A text containing POISON fails, as a NaN batch would."""

    def __init__(self):
        self.embedded: list[str] = []
        self.calls = 0

    def check_dim(self, dim):
        return dim or 2

    def embed(self, texts, dim=None):
        self.calls += 1
        self.embedded += texts
        angles = [0.0 if POISON in t else float(t.rsplit("Query:", 1)[-1]) for t in texts]
        vectors = np.array([[math.cos(a), math.sin(a)] for a in angles], dtype=np.float32)
        errors = ["non_finite_output: stub" if POISON in t else None for t in texts]
        vectors[[e is not None for e in errors]] = 0.0
        return EmbedOutput(vectors, np.ones(len(texts), np.int32), np.zeros(len(texts), bool), errors)

    def rerank(self, queries, documents, instruction):
        self.calls += 1
        errors = ["non_finite_output: stub" if POISON in d else None for d in documents]
        scores = np.array([np.nan if e else float(d) for d, e in zip(documents, errors)], dtype=np.float32)
        return RerankOutput(scores, np.ones(len(documents), np.int32), np.zeros(len(documents), bool), errors)


def sts_pairs(angle_pairs, gold):
    return [StsPair(str(a), str(b), g, i + 1) for i, ((a, b), g) in enumerate(zip(angle_pairs, gold))]


def test_sts_puts_the_symmetric_instruction_on_both_sides_and_embeds_each_text_once():
    engine = StubEngine()
    evaluate_sts(engine, sts_pairs([(0.1, 0.2), (0.2, 0.3)], [1, 2]), DEFAULT_SYMMETRIC_INSTRUCTION,
                 progress=no_progress)
    assert sorted(engine.embedded) == sorted(format_query(s, "Retrieve semantically similar text")
                                             for s in ("0.1", "0.2", "0.3"))
    assert engine.embedded[0].startswith("Instruct: Retrieve semantically similar text\nQuery:")


def test_sts_without_instruction_embeds_the_raw_sentences():
    engine = StubEngine()
    evaluate_sts(engine, sts_pairs([(0.1, 0.2)], [1]), None, progress=no_progress)
    assert sorted(engine.embedded) == ["0.1", "0.2"]


def test_sts_figures_are_scipys_correlations_of_the_cosines_times_100():
    rng = np.random.default_rng(3)
    angles = rng.uniform(0, 3, size=(30, 2)).round(3)
    gold = rng.integers(0, 6, size=30).astype(float)  # tied gold scores, as in STS
    results = evaluate_sts(StubEngine(), sts_pairs(angles, gold), None, progress=no_progress)
    cosines = np.cos(angles[:, 0] - angles[:, 1])
    assert results["spearman_x100"] == pytest.approx(100 * stats.spearmanr(cosines, gold).statistic, abs=1e-4)
    assert results["pearson_x100"] == pytest.approx(100 * stats.pearsonr(cosines, gold).statistic, abs=1e-4)
    assert (results["pairs"], results["pairs_scored"], results["pairs_failed"]) == (30, 30, 0)


def test_sts_leaves_out_and_counts_pairs_whose_text_failed():
    pairs = sts_pairs([(0.1, 0.2), (0.5, 1.5), (0.3, 0.0), (0.9, 0.2)], [4, 1, 3, 2])
    pairs[1] = StsPair(POISON, "0.4", 5.0, 2)
    results = evaluate_sts(StubEngine(), pairs, None, progress=no_progress)
    assert (results["pairs_scored"], results["pairs_failed"]) == (3, 1)
    assert results["first_error"] == "non_finite_output: stub"
    kept = np.cos(np.array([0.1 - 0.2, 0.3 - 0.0, 0.9 - 0.2]))
    assert results["spearman_x100"] == pytest.approx(100 * stats.spearmanr(kept, [4, 3, 2]).statistic, abs=1e-4)


def test_chunked_outputs_come_back_in_the_callers_order():
    texts = ["0.5", "1.25", "0.125", "2.0", "0.75"]
    engine = StubEngine()
    rows = embed_texts(engine, texts, advance=lambda n: None, chunk_rows=2)
    assert engine.calls == 3
    expected = np.array([[math.cos(float(t)), math.sin(float(t))] for t in texts])
    np.testing.assert_allclose(rows.values, expected, atol=1e-6)


def test_chunks_hold_the_longest_rows_first_and_every_row_once():
    chunks = chunk_by_length([3, 10, 1, 7, 7], chunk_rows=2)
    assert [c.tolist() for c in chunks] == [[1, 3], [4, 0], [2]]


def query(qid, positives, negatives):
    return RerankQuery(qid, f"query {qid}", tuple(positives), tuple(negatives), 1)


def test_reranking_averages_mrr_ndcg_and_ap_over_queries_with_a_positive():
    queries = [
        query("a", ["0.9"], ["0.1", "0.2"]),          # positive first: every metric 1
        query("b", ["0.3"], ["0.8", "0.7", "0.1"]),   # positive third: RR 1/3, AP 1/3, nDCG 1/log2(4)
        query("c", [], ["0.5", "0.4"]),               # no positive: not scored, counted
    ]
    engine = StubEngine()
    results = evaluate_reranking(engine, queries, "inst", progress=no_progress)
    assert results["mrr_at_10_x100"] == pytest.approx(100 * (1 + 1 / 3) / 2)
    assert results["map_x100"] == pytest.approx(100 * (1 + 1 / 3) / 2)
    assert results["ndcg_at_10_x100"] == pytest.approx(100 * (1 + 1 / math.log2(4)) / 2)
    assert (results["queries"], results["queries_scored"], results["queries_without_positive"]) == (3, 2, 1)
    assert results["pairs_scored"] == 7  # query c's passages never reach the engine


def test_reranking_leaves_out_and_counts_a_query_with_a_failed_pair():
    queries = [query("a", ["0.9"], ["0.1"]), query("b", ["0.3"], [POISON, "0.1"]), query("c", ["0.2"], [])]
    results = evaluate_reranking(StubEngine(), queries, "inst", progress=no_progress)
    assert (results["queries_scored"], results["queries_failed"], results["queries_without_negative"]) == (2, 1, 1)
    assert results["mrr_at_10_x100"] == pytest.approx(100.0)


def test_reranking_counts_queries_where_a_positive_ties_a_negative():
    results = evaluate_reranking(StubEngine(), [query("a", ["0.5"], ["0.5", "0.1"])], "inst", progress=no_progress)
    assert results["queries_with_ties"] == 1
    assert results["mrr_at_10_x100"] == pytest.approx(50.0)  # the tie ranks the positive second


def test_rerank_agreement_measures_score_differences_and_ranking_agreement_per_query():
    pairs = flatten_queries([query("a", ["1"], ["2", "3"]), query("b", ["1"], ["2", "3", "4"])],
                            positive_required=False)
    a = EngineRows(np.array([0.1, 0.2, 0.3, 0.1, 0.2, 0.3, 0.4], np.float32), [None] * 7)
    same_order = EngineRows(a.values + np.float32(0.01), [None] * 7)
    reversed_b = EngineRows(np.array([0.1, 0.2, 0.3, 0.4, 0.3, 0.2, 0.1], np.float32), [None] * 7)
    close = compare_rerank_scores(pairs, a, same_order)
    assert close["score_diff_worst"] == pytest.approx(0.01, abs=1e-6)
    assert (close["spearman_worst"], close["kendall_worst"], close["top1_agreement"]) == (1.0, 1.0, 1.0)
    mixed = compare_rerank_scores(pairs, a, reversed_b)
    assert mixed["spearman_worst"] == pytest.approx(-1.0)
    assert mixed["spearman_mean"] == pytest.approx(0.0)
    assert mixed["top1_agreement"] == 0.5


def test_embedding_agreement_reports_the_worst_text_and_skips_failed_rows():
    a = EngineRows(np.array([[1, 0], [0, 1], [1, 1]], np.float32), [None, None, None])
    b = EngineRows(np.array([[1, 0], [1, 1], [0, 0]], np.float32), [None, None, "non_finite_output"])
    result = compare_embeddings(a, b)
    assert result["cosine_worst"] == pytest.approx(1 / math.sqrt(2))
    assert result["worst_text_index"] == 1
    assert (result["texts_compared"], result["texts_failed_b"]) == (2, 1)


def test_progress_outside_a_terminal_prints_plain_lines_that_reach_the_total():
    import io

    from rich.console import Console

    from workers.eval.running import progress_bar

    log = io.StringIO()
    with progress_bar("embedding", 3, console=Console(file=log, force_terminal=False)) as advance:
        advance(1)
        advance(2)
    assert log.getvalue().startswith("embedding: 3/3 (100%) after ")
