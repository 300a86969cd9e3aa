"""The accuracy metrics, in plain numpy, each checked in the tests against scipy or scikit-learn.

Correlations return NaN where they are undefined (fewer than two points, or a constant input),
as scipy does; callers report that instead of a number.

Ranking metrics score ONE query: `scores` from the model, `relevant` the gold labels (bool).
Every ranking metric reads the same ranking: score descending and, among equal scores, the
non-relevant items first. That is the worst order the scores allow, so a tie never flatters a
model and the order of the input file does not matter (MS MARCO files list the positives first:
any "stable" tie order would hand a constant scorer a perfect MRR). Without ties the metrics are
the standard ones (sklearn's average_precision_score and ndcg_score give the same values). A
query without a relevant item has no defined value: these functions return NaN for it, and the
reranking evaluation leaves such queries out of its means and counts them.
"""

import numpy as np

DEFAULT_CUTOFF = 10  # MRR@10 and nDCG@10: the standard MS MARCO / MTEB reranking figures


# --- correlations ---------------------------------------------------------------------------------
def rank_average(values) -> np.ndarray:
    """1-based ranks, tied values sharing the mean of the ranks they span ([3, 1, 3] -> [2.5, 1, 2.5])."""
    x = as_finite_vector(values)
    order = np.argsort(x, kind="stable")
    ordered = x[order]
    starts_run = np.r_[True, ordered[1:] != ordered[:-1]]
    run_of = np.cumsum(starts_run) - 1
    run_start = np.flatnonzero(starts_run)
    run_end = np.r_[run_start[1:], len(x)]  # exclusive
    # positions run_start..run_end-1 (0-based) hold ranks run_start+1..run_end: their mean
    mean_rank = (run_start + 1 + run_end) / 2.0
    ranks = np.empty(len(x))
    ranks[order] = mean_rank[run_of]
    return ranks


def correlate_pearson(x, y) -> float:
    a, b = paired_vectors(x, y)
    if len(a) < 2:
        return float("nan")
    da, db = a - a.mean(), b - b.mean()
    denominator = np.sqrt((da * da).sum() * (db * db).sum())
    if denominator == 0:
        return float("nan")
    return float(np.clip((da * db).sum() / denominator, -1.0, 1.0))


def correlate_spearman(x, y) -> float:
    """Pearson of the average ranks: the tie handling of scipy.stats.spearmanr."""
    a, b = paired_vectors(x, y)
    return correlate_pearson(rank_average(a), rank_average(b))


def correlate_kendall(x, y) -> float:
    """Kendall's tau-b (ties in either input corrected for, as scipy.stats.kendalltau).

    Quadratic in memory: meant for one query's passages (hundreds), not a whole corpus.
    """
    a, b = paired_vectors(x, y)
    n = len(a)
    if n < 2:
        return float("nan")
    upper = np.triu(np.ones((n, n), dtype=bool), k=1)
    sign_a = np.sign(a[:, None] - a[None, :])[upper]
    sign_b = np.sign(b[:, None] - b[None, :])[upper]
    pairs = n * (n - 1) // 2
    untied_a = pairs - int((sign_a == 0).sum())
    untied_b = pairs - int((sign_b == 0).sum())
    if untied_a == 0 or untied_b == 0:
        return float("nan")
    return float(np.clip((sign_a * sign_b).sum() / np.sqrt(untied_a * untied_b), -1.0, 1.0))


def measure_cosines(a, b) -> np.ndarray:
    """Row-wise cosine similarity of two [n, dim] arrays, in float64 (NaN for a zero row)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"cosines need two [n, dim] arrays of one shape, got {a.shape} and {b.shape}")
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norms > 0, (a * b).sum(axis=1) / norms, np.nan)


# --- ranking, one query ---------------------------------------------------------------------------
def rank_pessimistically(scores, relevant) -> np.ndarray:
    """The labels in ranked order: score descending, non-relevant first among equal scores."""
    s = as_finite_vector(scores)
    r = np.asarray(relevant, dtype=bool)
    if r.shape != s.shape:
        raise ValueError(f"{len(s)} scores but {r.size} relevance labels")
    return r[np.lexsort((r, -s))]  # the last key sorts first


def score_reciprocal_rank(scores, relevant, k: int = DEFAULT_CUTOFF) -> float:
    """1 / rank of the first relevant item, 0 when it ranks below k (MRR@k over queries)."""
    hits = np.flatnonzero(rank_pessimistically(scores, relevant))
    if hits.size == 0:
        return float("nan")
    return 1.0 / (hits[0] + 1) if hits[0] < k else 0.0


def score_ndcg(scores, relevant, k: int = DEFAULT_CUTOFF) -> float:
    """nDCG@k with binary gains: sum of 1/log2(rank+1) over relevant items in the top k, over
    the same sum for the ideal ranking."""
    ranked = rank_pessimistically(scores, relevant)
    n_relevant = int(ranked.sum())
    if n_relevant == 0:
        return float("nan")
    discounts = 1.0 / np.log2(np.arange(2, len(ranked) + 2))
    dcg = float((ranked[:k] * discounts[:k]).sum())
    ideal = float(discounts[:min(n_relevant, k)].sum())
    return dcg / ideal


def score_average_precision(scores, relevant) -> float:
    """Mean over the relevant items of the precision at each one's rank (no cutoff)."""
    ranked = rank_pessimistically(scores, relevant)
    hit_ranks = np.flatnonzero(ranked) + 1
    if hit_ranks.size == 0:
        return float("nan")
    return float((np.arange(1, hit_ranks.size + 1) / hit_ranks).mean())


def has_tie_across_labels(scores, relevant) -> bool:
    """Whether some relevant item scores exactly as some non-relevant one: where the tie rule
    above decides the figures, so reports count such queries."""
    s = as_finite_vector(scores)
    r = np.asarray(relevant, dtype=bool)
    return bool(np.intersect1d(s[r], s[~r]).size)


# --- input checks ---------------------------------------------------------------------------------
def as_finite_vector(values) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"expected a 1-d array, got shape {x.shape}")
    if not np.isfinite(x).all():
        # A NaN would sort arbitrarily and silently corrupt every figure; callers drop failed rows first.
        raise ValueError(f"{int((~np.isfinite(x)).sum())} non-finite values; drop failed rows before scoring")
    return x


def paired_vectors(x, y) -> tuple[np.ndarray, np.ndarray]:
    a, b = as_finite_vector(x), as_finite_vector(y)
    if a.shape != b.shape:
        raise ValueError(f"paired inputs differ in length: {len(a)} and {len(b)}")
    return a, b
