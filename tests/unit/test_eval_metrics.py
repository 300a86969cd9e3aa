"""The evaluation metrics: hand-computed values on tiny cases, then scipy and scikit-learn where
they define the same metric."""

import math

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import average_precision_score, label_ranking_average_precision_score, ndcg_score

from workers.eval.metrics import (
    correlate_kendall,
    correlate_pearson,
    correlate_spearman,
    has_tie_across_labels,
    measure_cosines,
    rank_average,
    score_average_precision,
    score_ndcg,
    score_reciprocal_rank,
)

LOG2_3, LOG2_4 = math.log2(3), math.log2(4)


# --- correlations -----------------------------------------------------------------------------------
def test_spearman_averages_tied_ranks():
    assert rank_average([3, 1, 3, 2]).tolist() == [3.5, 1.0, 3.5, 2.0]
    assert rank_average([5, 5, 5]).tolist() == [2.0, 2.0, 2.0]
    # x ranks [1.5, 1.5, 3, 4], y ranks [1, 2, 3, 4]: Pearson of the ranks, by hand = 0.9486833
    assert correlate_spearman([1, 1, 2, 3], [10, 20, 30, 40]) == pytest.approx(3 / math.sqrt(10), abs=1e-12)


def test_pearson_of_a_small_sample_is_the_textbook_value():
    # x - mean = [-1, 0, 1], y - mean = [-2, 1, 1]: 3 / sqrt(2 * 6)
    assert correlate_pearson([1, 2, 3], [1, 4, 4]) == pytest.approx(3 / math.sqrt(12), abs=1e-12)
    assert correlate_pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)


@pytest.mark.parametrize("seed", range(5))
def test_correlations_match_scipy_with_and_without_ties(seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=200)
    y = x + rng.normal(size=200)
    tied_x, tied_y = np.round(x), np.round(y * 2) / 2  # many ties: what STS gold scores look like
    for a, b in ((x, y), (tied_x, tied_y), (tied_x, y)):
        assert correlate_spearman(a, b) == pytest.approx(stats.spearmanr(a, b).statistic, abs=1e-12)
        assert correlate_pearson(a, b) == pytest.approx(stats.pearsonr(a, b).statistic, abs=1e-12)
        assert correlate_kendall(a, b) == pytest.approx(stats.kendalltau(a, b).statistic, abs=1e-12)


def test_a_correlation_with_a_constant_or_a_single_point_is_undefined():
    assert math.isnan(correlate_pearson([1, 1, 1], [1, 2, 3]))
    assert math.isnan(correlate_spearman([1, 2, 3], [7, 7, 7]))
    assert math.isnan(correlate_kendall([1, 1], [1, 2]))
    assert math.isnan(correlate_spearman([1], [2]))


def test_metrics_refuse_nan_inputs_instead_of_ranking_them_somewhere():
    with pytest.raises(ValueError, match="non-finite"):
        correlate_spearman([1, float("nan"), 3], [1, 2, 3])
    with pytest.raises(ValueError, match="non-finite"):
        score_ndcg([0.5, float("nan")], [True, False])


def test_cosines_are_per_row_and_scale_free():
    a = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]])
    b = np.array([[2.0, 0.0], [-1.0, -1.0], [1.0, 0.0]])
    assert measure_cosines(a, b).tolist() == pytest.approx([1.0, -1.0, 0.0])


# --- ranking, by hand ------------------------------------------------------------------------------
def test_reciprocal_rank_is_one_over_the_first_relevant_rank_within_the_cutoff():
    scores = [0.9, 0.8, 0.7, 0.6]
    assert score_reciprocal_rank(scores, [False, False, True, True]) == pytest.approx(1 / 3)
    assert score_reciprocal_rank(scores, [True, False, False, False]) == 1.0
    assert score_reciprocal_rank(np.arange(12, 0, -1), [False] * 11 + [True]) == 0.0  # rank 12 > 10
    assert score_reciprocal_rank(np.arange(12, 0, -1), [False] * 11 + [True], k=12) == pytest.approx(1 / 12)


def test_ndcg_discounts_each_relevant_rank_by_log2():
    # relevant at ranks 2 and 3: (1/log2(3) + 1/log2(4)) / (1 + 1/log2(3))
    value = score_ndcg([0.9, 0.8, 0.7, 0.6], [False, True, True, False])
    assert value == pytest.approx((1 / LOG2_3 + 1 / LOG2_4) / (1 + 1 / LOG2_3))
    assert score_ndcg(np.arange(12, 0, -1), [False] * 10 + [True, True]) == 0.0  # both below the cutoff


def test_average_precision_averages_precision_at_each_relevant_rank():
    # relevant at ranks 1 and 3: (1/1 + 2/3) / 2
    assert score_average_precision([0.9, 0.8, 0.7], [True, False, True]) == pytest.approx(5 / 6)


def test_ties_rank_negatives_first_so_a_constant_scorer_gets_no_credit_for_input_order():
    # The MS MARCO files list the positive first; all four scores equal.
    scores, relevant = [0.5, 0.5, 0.5, 0.5], [True, False, False, False]
    assert score_reciprocal_rank(scores, relevant) == pytest.approx(1 / 4)
    assert score_average_precision(scores, relevant) == pytest.approx(1 / 4)
    assert score_ndcg(scores, relevant) == pytest.approx(1 / math.log2(5))
    assert has_tie_across_labels(scores, relevant)
    assert not has_tie_across_labels([0.9, 0.5, 0.5], [True, False, False])  # negatives tied among themselves


def test_a_query_without_a_relevant_passage_has_no_defined_value():
    for metric in (score_reciprocal_rank, score_ndcg, score_average_precision):
        assert math.isnan(metric([0.3, 0.2], [False, False]))


# --- ranking, against scikit-learn ------------------------------------------------------------------
def random_queries(seed: int, n: int = 40):
    """(scores, relevant) per query: 1-3 positives among 5-30 passages, continuous scores (no ties)."""
    rng = np.random.default_rng(seed)
    for _ in range(n):
        size = int(rng.integers(5, 31))
        relevant = np.zeros(size, dtype=bool)
        relevant[rng.choice(size, int(rng.integers(1, 4)), replace=False)] = True
        yield rng.random(size) + relevant * rng.random() * 0.5, relevant


@pytest.mark.parametrize("seed", range(3))
def test_ndcg_and_average_precision_match_sklearn_when_no_scores_tie(seed):
    for scores, relevant in random_queries(seed):
        assert score_ndcg(scores, relevant) == pytest.approx(ndcg_score([relevant], [scores], k=10), abs=1e-12)
        assert score_average_precision(scores, relevant) == pytest.approx(
            average_precision_score(relevant, scores), abs=1e-12)
        assert score_average_precision(scores, relevant) == pytest.approx(
            label_ranking_average_precision_score([relevant], [scores]), abs=1e-12)


def test_with_ties_our_figures_never_exceed_sklearns_tie_averaged_or_tie_grouped_ones():
    rng = np.random.default_rng(7)
    for _ in range(200):
        relevant = rng.random(8) < 0.3
        relevant[0] = True
        scores = rng.integers(0, 3, size=8).astype(float)  # heavy ties
        assert score_ndcg(scores, relevant) <= ndcg_score([relevant], [scores], k=10) + 1e-12
        assert score_average_precision(scores, relevant) <= label_ranking_average_precision_score(
            [relevant], [scores]) + 1e-12
