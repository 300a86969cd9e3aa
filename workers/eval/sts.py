"""STS: Spearman and Pearson of cosine similarity against gold scores (x100, as MTEB reports).

Both sentences get the same instruction (the symmetric-task format of the model card, built by
common.templates); `instruction=None` embeds the raw sentences. Each distinct text is embedded
once: STS files repeat sentences.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from common.templates import format_query
from workers.eval import metrics
from workers.eval.inputs import StsPair
from workers.eval.running import DEFAULT_CHUNK_ROWS, EngineRows, embed_texts, progress_bar


@dataclass
class StsTexts:
    texts: list[str]     # distinct formatted texts, the engine's input
    left: np.ndarray     # [pairs] index of each pair's sentence1 in texts
    right: np.ndarray    # [pairs] index of each pair's sentence2 in texts


def index_sts_texts(pairs: Sequence[StsPair], instruction: str | None) -> StsTexts:
    position: dict[str, int] = {}
    left, right = [], []
    for pair in pairs:
        for sentence, side in ((pair.sentence1, left), (pair.sentence2, right)):
            text = format_query(sentence, instruction)
            side.append(position.setdefault(text, len(position)))
    return StsTexts(list(position), np.array(left, dtype=np.int64), np.array(right, dtype=np.int64))


def score_sts(pairs: Sequence[StsPair], texts: StsTexts, embedded: EngineRows) -> dict:
    """The STS figures over every pair whose two texts were embedded; failed pairs are counted."""
    ok = embedded.ok
    usable = ok[texts.left] & ok[texts.right]
    gold = np.array([p.score for p in pairs], dtype=np.float64)[usable]
    cosines = metrics.measure_cosines(embedded.values[texts.left[usable]], embedded.values[texts.right[usable]])
    return {
        "spearman_x100": 100 * metrics.correlate_spearman(cosines, gold),
        "pearson_x100": 100 * metrics.correlate_pearson(cosines, gold),
        "pairs": len(pairs),
        "pairs_scored": int(usable.sum()),
        "pairs_failed": int((~usable).sum()),
        "first_error": embedded.first_error(),
        # A collapsed model (every vector alike) shows here before it shows in a correlation.
        "cosine_mean": float(cosines.mean()) if cosines.size else float("nan"),
        "cosine_std": float(cosines.std()) if cosines.size else float("nan"),
    }


def evaluate_sts(engine, pairs: Sequence[StsPair], instruction: str | None, dim: int | None = None,
                 chunk_rows: int = DEFAULT_CHUNK_ROWS, progress=progress_bar) -> dict:
    texts = index_sts_texts(pairs, instruction)
    with progress("embedding", len(texts.texts)) as advance:
        embedded = embed_texts(engine, texts.texts, advance, dim=dim, chunk_rows=chunk_rows)
    return {**score_sts(pairs, texts, embedded), "texts_embedded": len(texts.texts)}
