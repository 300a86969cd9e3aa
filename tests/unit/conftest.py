"""A fake engine for testing the shared pre- and post-processing without a model.

Like infinity's debug engine, its "model" returns outputs that encode each row's own token ids,
so any mix-up between rows (sorting, bucketing, padding, restoring order) fails loudly.
"""

import numpy as np
import pytest

from workers.batching import Batch
from workers.engines.base import Engine, EngineSpec, ModelInfo

FAKE_PAD_ID = 151654  # <|vision_pad|>: a pad id no real row contains, so reading padding shows up
FAKE_HIDDEN = 256


class FakeEngine(Engine):
    """forward_embed: row i's vector is its real token ids, in order, zero-filled to `hidden`.
    forward_rerank: row i's logit gap is a position-weighted checksum of its real token ids.

    poison_token: a row holding this token id gets `poison_value` (NaN by default) instead;
    poison_whole_batch: then every row of that row's batch does.
    """

    def __init__(self, tokenizer, task="embed", hidden=FAKE_HIDDEN, poison_token=None, poison_value=np.nan,
                 poison_whole_batch=False, **spec_fields):
        self.spec = EngineSpec(model="fake", task=task, dtype="fp32", **spec_fields)
        self.info = ModelInfo(hidden, True, "fake")
        self.tokenizer = tokenizer
        self.endoftext_id = 151643
        self.pad_id = FAKE_PAD_ID
        self.yes_id, self.no_id = 9693, 2152
        self.poison_token = poison_token
        self.poison_value = poison_value
        self.poison_whole_batch = poison_whole_batch
        self.batches_seen: list[Batch] = []
        self.rows_seen: dict[int, list[int]] = {}  # caller position -> ids fed to the model

    def real_ids(self, batch: Batch) -> list[np.ndarray]:
        """Each row's real tokens, read from the padded array the way a model would see them;
        asserts that every other cell is padding."""
        out = []
        for i, n in enumerate(batch.lengths):
            row = batch.input_ids[i]
            if batch.padding_side == "right":
                real, pad = row[:n], row[n:]
            else:
                real, pad = row[len(row) - n:], row[:len(row) - n]
            assert (pad == FAKE_PAD_ID).all(), f"row {i} has non-pad ids in its padding"
            out.append(real)
        return out

    def _record(self, batch: Batch) -> list[np.ndarray]:
        self.batches_seen.append(batch)
        ids = self.real_ids(batch)
        for pos, row in zip(batch.rows, ids):
            self.rows_seen[int(pos)] = row.tolist()
        return ids

    def _poisoned(self, ids: list[np.ndarray]) -> np.ndarray:
        hit = np.array([self.poison_token is not None and self.poison_token in row for row in ids])
        if self.poison_whole_batch and hit.any():
            hit[:] = True
        return hit

    def forward_embed(self, batch: Batch) -> np.ndarray:
        ids = self._record(batch)
        out = np.zeros((len(ids), self.info.hidden_size), dtype=np.float32)
        for i, row in enumerate(ids):
            assert len(row) <= self.info.hidden_size, "fake engine: use seqlens <= hidden"
            out[i, :len(row)] = row
        out[self._poisoned(ids)] = self.poison_value
        return out

    def forward_rerank(self, batch: Batch) -> np.ndarray:
        ids = self._record(batch)
        gaps = np.array([fake_gap(row) for row in ids], dtype=np.float32)
        gaps[self._poisoned(ids)] = self.poison_value
        return gaps


def fake_gap(ids) -> float:
    """The fake reranker's logit gap for a row: a checksum of ids and positions, in [-5, 5)."""
    ids = np.asarray(ids, dtype=np.int64)
    checksum = int((ids * np.arange(1, len(ids) + 1)).sum() % 10007)
    return checksum / 1000.7 - 5.0


def fake_vector(ids, dim=None) -> np.ndarray:
    """What the fake engine's embedding of a row with these ids must be after post-processing."""
    v = np.zeros(FAKE_HIDDEN, dtype=np.float64)
    v[:len(ids)] = ids
    v = v[:dim or FAKE_HIDDEN]
    return v / np.linalg.norm(v)


@pytest.fixture
def fake_engine(embed_tokenizer, rerank_tokenizer):
    """make(task='embed', **options) -> a FakeEngine over the real Qwen3 tokenizer of that task."""

    def make(task="embed", **options):
        return FakeEngine(embed_tokenizer if task == "embed" else rerank_tokenizer, task=task, **options)

    return make


@pytest.fixture
def fake_vector_of():
    return fake_vector


@pytest.fixture
def fake_gap_of():
    return fake_gap
