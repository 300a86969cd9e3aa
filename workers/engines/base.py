"""The engine interface every backend implements.

An engine is split like infinity's: pre-process (tokenise, cap, truncate, bucket, pad: CPU,
here in the base class), core (a forward pass over one padded batch: the backend), and
post-process (NaN checks, L2 normalisation, MRL, P(yes): here again, in fp32). A backend
therefore only has to turn a padded batch into pooled hidden states or yes/no logit gaps, and
every backend shares the same semantics by construction.
"""

import copy
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from common import defaults, options
from common.errors import ConfigError
from common.templates import RERANK_PREFIX, RERANK_SUFFIX
from workers import batching


@dataclass(frozen=True)
class EngineSpec:
    """Everything that decides what an engine computes. Two workers with equal specs are
    interchangeable; a job's spec decides its queue."""

    model: str
    task: str = "embed"  # embed | rerank
    backend: str = defaults.DEFAULT_BACKEND
    dtype: str = defaults.DEFAULT_DTYPE  # fp32 | bf16 | fp16 | int8 (onnx artifacts; torch on a CPU)
    device: str = defaults.DEFAULT_DEVICE  # cpu | cuda:N | vacc:N
    seqlens: tuple[int, ...] = defaults.DEFAULT_SEQLENS
    batch_tokens: int = defaults.DEFAULT_BATCH_TOKENS
    max_batch_rows: int = defaults.DEFAULT_MAX_BATCH_ROWS
    padding_side: str = defaults.DEFAULT_PADDING_SIDE
    pad_to_bucket: bool = False  # True: every batch has exactly a bucket's length (fixed shapes)
    chars_per_token_cap: int = defaults.CHARS_PER_TOKEN_CAP
    torch_compile: str = defaults.DEFAULT_TORCH_COMPILE  # torch backend: see torch_engine.compile_model

    def __post_init__(self):
        options.check_task(self.task)
        options.check_dtype(self.dtype, self.backend)
        if self.padding_side not in ("left", "right"):
            raise ConfigError(f"padding_side must be 'left' or 'right', got {self.padding_side!r}")
        object.__setattr__(self, "seqlens", options.validate_seqlens(self.seqlens))
        options.check_torch_compile(self.torch_compile, self.backend, self.device)
        options.check_int8_device(self.dtype, self.backend, self.device)

    @property
    def max_tokens(self) -> int:
        return self.seqlens[-1]

    @property
    def max_chars(self) -> int:
        return self.max_tokens * self.chars_per_token_cap


Progress = Callable[[int, int], None] | None  # (rows, real tokens) of a forward pass just done


def report(progress: Progress, batch: batching.Batch) -> None:
    if progress is not None:
        progress(len(batch.rows), int(np.asarray(batch.lengths).sum()))


@dataclass
class EmbedOutput:
    vectors: np.ndarray      # [n, dim] float32, unit length; zeros where errors[i] is set
    n_tokens: np.ndarray     # [n] int32 real tokens fed to the model (incl. <|endoftext|>)
    truncated: np.ndarray    # [n] bool
    errors: list[str | None] = field(default_factory=list)  # per row; such rows must not be written


@dataclass
class RerankOutput:
    scores: np.ndarray       # [n] float32 P(yes); NaN where errors[i] is set
    n_tokens: np.ndarray
    truncated: np.ndarray
    errors: list[str | None] = field(default_factory=list)


@dataclass(frozen=True)
class ModelInfo:
    hidden_size: int
    random_weights: bool
    source: str  # the folder or hub id it was loaded from


class Engine(ABC):
    """Embeds texts or scores (query, document) pairs, in the caller's order."""

    spec: EngineSpec
    info: ModelInfo
    tokenizer: object
    endoftext_id: int
    pad_id: int
    yes_id: int
    no_id: int

    # --- what a backend implements -------------------------------------------------------------
    @abstractmethod
    def forward_embed(self, batch: batching.Batch) -> np.ndarray:
        """[b, hidden] float32: the final hidden state at each row's last real token."""

    @abstractmethod
    def forward_rerank(self, batch: batching.Batch) -> np.ndarray:
        """[b] float32: logit(yes) - logit(no) at each row's last real token."""

    # --- shared pre- and post-processing --------------------------------------------------------
    def embed(self, texts: Sequence[str], dim: int | None = None, progress: Progress = None) -> EmbedOutput:
        """Embed already-formatted texts (see common.templates for queries). progress(rows, tokens)
        is called after each forward pass (the worker's heartbeat reports it)."""
        return self.embed_tokenized(self.tokenize_embed(texts), dim, progress)

    def rerank(self, queries: Sequence[str], documents: Sequence[str],
               instruction: str = defaults.DEFAULT_RERANK_INSTRUCTION, progress: Progress = None) -> RerankOutput:
        return self.rerank_tokenized(self.tokenize_rerank(queries, documents, instruction), progress)

    # The two halves, for a caller that tokenises the next chunk while the device runs this one
    # (workers/pipeline.py): tokenising needs no device and the fast tokenizer releases the GIL.
    def tokenize_embed(self, texts: Sequence[str]) -> list[batching.TokenizedRow]:
        return batching.tokenize_for_embedding(self.tokenizer, texts, self.spec.max_tokens, self.endoftext_id,
                                               self.spec.max_chars)

    def tokenize_rerank(self, queries: Sequence[str], documents: Sequence[str],
                        instruction: str = defaults.DEFAULT_RERANK_INSTRUCTION) -> list[batching.TokenizedRow]:
        return batching.tokenize_for_rerank(self.tokenizer, self.rerank_prompt_ids(), queries, documents,
                                            instruction, self.spec.max_tokens, self.spec.max_chars)

    def embed_tokenized(self, rows: list[batching.TokenizedRow], dim: int | None = None,
                        progress: Progress = None) -> EmbedOutput:
        dim = self.check_dim(dim)
        vectors = np.zeros((len(rows), dim), dtype=np.float32)
        errors = [r.error for r in rows]
        for batch in self.batches(rows):
            pooled = self.forward_embed(batch)
            assert pooled.shape == (len(batch.rows), self.info.hidden_size), pooled.shape
            batch_vectors, bad = normalize_mrl(pooled, dim)
            vectors[batch.rows] = 0.0 if bad.any() else batch_vectors  # a poisoned batch writes nothing
            self.mark_batch_errors(errors, batch, bad, "embedding")
            report(progress, batch)
        return EmbedOutput(vectors, *self.row_stats(rows), errors=errors)

    def rerank_tokenized(self, rows: list[batching.TokenizedRow], progress: Progress = None) -> RerankOutput:
        scores = np.full(len(rows), np.nan, dtype=np.float32)
        errors = [r.error for r in rows]
        for batch in self.batches(rows):
            gap = self.forward_rerank(batch).astype(np.float32)
            assert gap.shape == (len(batch.rows),), gap.shape
            bad = ~np.isfinite(gap)
            # P(yes) = softmax([no, yes])[1] = sigmoid(yes - no) = exp(-log(1 + exp(-gap))), without overflow
            scores[batch.rows] = np.nan if bad.any() else np.exp(-np.logaddexp(np.float32(0), -gap))
            self.mark_batch_errors(errors, batch, bad, "rerank score")
            report(progress, batch)
        return RerankOutput(scores, *self.row_stats(rows), errors=errors)

    def batches(self, rows: list[batching.TokenizedRow]):
        runnable = [i for i, r in enumerate(rows) if r.error is None]
        if not runnable:
            return
        ids = [rows[i].ids for i in runnable]
        plans = batching.plan_batches([len(x) for x in ids], self.spec.seqlens, self.spec.batch_tokens,
                                      self.spec.max_batch_rows, self.spec.pad_to_bucket)
        positions = np.asarray(runnable)
        for local_rows, seqlen in plans:
            batch = batching.pad_rows(ids, local_rows, seqlen, self.pad_id, self.spec.padding_side)
            batch.rows = positions[local_rows]
            yield batch

    def configured(self, seqlens: tuple[int, ...]) -> "Engine":
        """This engine with a job's own length buckets; the loaded model is shared, not copied."""
        seqlens = options.validate_seqlens(seqlens)
        if seqlens == self.spec.seqlens:
            return self
        clone = copy.copy(self)
        clone.spec = replace(self.spec, seqlens=seqlens)
        return clone

    def check_dim(self, dim: int | None) -> int:
        return options.check_dim(dim, self.info.hidden_size) or self.info.hidden_size

    def rerank_prompt_ids(self) -> batching.RerankPromptIds:
        if not hasattr(self, "_rerank_prompt_ids"):
            prefix, suffix = batching.tokenize_texts(self.tokenizer, [RERANK_PREFIX, RERANK_SUFFIX])
            self._rerank_prompt_ids = batching.RerankPromptIds(prefix, suffix)
        return self._rerank_prompt_ids

    @staticmethod
    def row_stats(rows: list[batching.TokenizedRow]) -> tuple[np.ndarray, np.ndarray]:
        return (np.array([len(r.ids) for r in rows], dtype=np.int32),
                np.array([r.truncated for r in rows], dtype=bool))

    def mark_batch_errors(self, errors: list, batch: batching.Batch, bad: np.ndarray, what: str) -> None:
        """A non-finite value poisons its whole batch: report every row of it, write none."""
        if not bad.any():
            return
        message = (f"non_finite_output: NaN/inf {what} in a batch of {len(batch.rows)} rows at seqlen "
                   f"{batch.seqlen}, dtype {self.spec.dtype}; fp16 overflows on some inputs, use bf16 or fp32")
        for r in batch.rows:
            errors[int(r)] = message


def normalize_mrl(pooled: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Take the first `dim` components, then L2-normalise over the hidden axis (never the batch
    axis: the vendor demo's bug). Returns (vectors, rows that are not finite)."""
    x = pooled[:, :dim].astype(np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    bad = ~np.isfinite(x).all(axis=1) | ~np.isfinite(norms[:, 0]) | (norms[:, 0] == 0)
    out = np.where(bad[:, None], 0.0, x / np.where(bad[:, None], 1.0, norms)).astype(np.float32)
    return out, bad
