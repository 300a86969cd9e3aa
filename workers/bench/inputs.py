"""Fixed-shape requests: token-id batches of exactly batch x seqlen real tokens.

The vendor's tool feeds compiled models token ids of the compiled shape; so does this one. No
tokenisation, no padding: every row is full, so real tokens = batch x seqlen and every backend
(dynamic or fixed shapes) runs the same work. Content does not change a transformer's cost, so
the ids are random ordinary tokens (ids below <|endoftext|>, where Qwen's special tokens start).
"""

import numpy as np

from workers.batching import Batch
from workers.bench.errors import BenchError


def fixed_shape_batch(engine, batch_size: int, seqlen: int, seed: int = 0) -> Batch:
    """A request for engine.spec.task: embed rows end in <|endoftext|> (where pooling reads),
    rerank rows are the real prompt prefix + filler + suffix (the yes/no position is the last)."""
    rng = np.random.default_rng(seed)
    if engine.spec.task == "embed":
        ids = np.concatenate([filler(rng, engine, batch_size, seqlen - 1),
                              np.full((batch_size, 1), engine.endoftext_id)], axis=1)
    else:
        prompt = engine.rerank_prompt_ids()
        fixed = len(prompt.prefix) + len(prompt.suffix)
        if seqlen <= fixed:
            raise BenchError(f"rerank at sequence length {seqlen}: the reranker's fixed prompt alone takes "
                             f"{fixed} tokens; use a length of at least {fixed + 1}")
        ids = np.concatenate([np.tile(prompt.prefix, (batch_size, 1)),
                              filler(rng, engine, batch_size, seqlen - fixed),
                              np.tile(prompt.suffix, (batch_size, 1))], axis=1)
    assert ids.shape == (batch_size, seqlen), ids.shape
    return Batch(rows=np.arange(batch_size), input_ids=ids.astype(np.int64),
                 lengths=np.full(batch_size, seqlen, dtype=np.int64), padding_side=engine.spec.padding_side)


def filler(rng: np.random.Generator, engine, rows: int, columns: int) -> np.ndarray:
    return rng.integers(0, engine.endoftext_id, size=(rows, columns), dtype=np.int64)


def run_request(engine, batch: Batch) -> np.ndarray:
    """One request through the backend's forward pass (the device's work; post-processing excluded).
    Engines return host arrays, so an accelerator has finished when this returns."""
    if engine.spec.task == "embed":
        return engine.forward_embed(batch)
    return engine.forward_rerank(batch)
